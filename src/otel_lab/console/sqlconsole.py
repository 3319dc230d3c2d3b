"""The SQL page's engine: arbitrary SELECTs over the store, safely.

Four independent fences, because any one of them alone has gaps:

1. the connection is opened read-only by the OS-level URI (``mode=ro``): SQLite refuses to
   write through it whatever the statement;
2. ``PRAGMA query_only`` refuses writes even to temp tables;
3. an authorizer allows only reading (no ATTACH of other files, no PRAGMA except a few
   read-only introspection ones, no writes of any kind);
4. a progress handler aborts the statement after ``timeout`` seconds, and at most
   ``max_rows`` rows are fetched, so a query cannot hold a worker thread or memory.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from otel_lab.console.model import SQLValue
from otel_lab.jsontypes import JSONObject, JSONScalar

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_ROWS = 1000
MAX_ROWS_LIMIT = 10_000
MAX_SQL_CHARS = 20_000
PROGRESS_STEPS = 10_000  # SQLite VM instructions between deadline checks (~1 ms)

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
# Introspection pragmas (may take a table/index name); counters only without an argument.
_INTROSPECTION_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info",
                          "index_xinfo", "table_list", "foreign_key_list"}  # fmt: skip
_COUNTER_PRAGMAS = {"page_count", "page_size", "freelist_count"}
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}

EXAMPLES = [
    ("Slowest server spans",
     "SELECT service_name, name, duration_ns / 1e6 AS ms, hex(trace_id) AS trace_id\n"
     "FROM spans WHERE kind = 2\nORDER BY duration_ns DESC LIMIT 20"),
    ("Error spans per service",
     "SELECT service_name, count(*) AS errors\nFROM spans WHERE status_code = 2\n"
     "GROUP BY service_name ORDER BY errors DESC"),
    ("Cache hit ratio from span attributes",
     "SELECT service_name,\n"
     "       avg(json_extract(attributes, '$.\"cache.hit\"')) AS hit_ratio, count(*) AS lookups\n"
     "FROM spans WHERE json_extract(attributes, '$.\"cache.hit\"') IS NOT NULL\n"
     "GROUP BY service_name"),
    ("Latest warnings and errors",
     "SELECT datetime(time_ns / 1e9, 'unixepoch') AS at, service_name, severity_text, body\n"
     "FROM logs WHERE severity_number >= 13\nORDER BY time_ns DESC LIMIT 50"),
    ("Metrics and point counts",
     "SELECT m.name, m.type, count(p.metric_id) AS points\n"
     "FROM metrics m LEFT JOIN metric_points p ON p.metric_id = m.id\n"
     "GROUP BY m.id ORDER BY points DESC"),
]  # fmt: skip


class SqlError(ValueError):
    """The statement was refused, failed or ran too long; the message says which."""


def _authorizer(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        allowed = name in _INTROSPECTION_PRAGMAS or (name in _COUNTER_PRAGMAS and arg2 is None)
        return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION:
        name = (arg2 or "").lower()
        return sqlite3.SQLITE_DENY if name in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot write, by URI mode, pragma and authorizer."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.execute("PRAGMA cache_size=-8000")
    conn.set_authorizer(_authorizer)
    return conn


def _cell(value: SQLValue) -> JSONScalar:
    if isinstance(value, bytes):
        return value.hex()  # ids are BLOBs; show them as the API does
    if isinstance(value, float) and value != value:
        return None
    return value


def run_sql(
    path: Path,
    sql: str,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> JSONObject:
    """Run one read-only statement; columns, rows (BLOBs as hex), truncated, elapsed_ms."""
    sql = sql.strip()
    if not sql:
        raise SqlError("empty statement")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlError(f"statement longer than {MAX_SQL_CHARS} characters")
    started = time.monotonic()
    deadline = started + timeout
    conn = connect_readonly(path)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
    try:
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchmany(max_rows + 1)
        except (sqlite3.DatabaseError, sqlite3.Warning) as exc:
            message = str(exc)
            if message == "interrupted" or time.monotonic() > deadline:
                raise SqlError(
                    f"statement stopped after the {timeout:g} s time limit; add a WHERE on an "
                    "indexed column (trace_id, service_name, start_ns) or a LIMIT"
                ) from None
            if "not authorized" in message or "readonly" in message:
                raise SqlError(f"{message}: the SQL page is read-only (SELECT only)") from None
            raise SqlError(message) from None
        columns = [d[0] for d in cursor.description or []]
    finally:
        conn.close()
    truncated = len(rows) > max_rows
    return {
        "columns": columns,
        "rows": [[_cell(v) for v in row] for row in rows[:max_rows]],
        "truncated": truncated,
        "max_rows": max_rows,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 3),
    }


def schema(path: Path) -> list[JSONObject]:
    """Tables and their columns, for the SQL page's sidebar."""
    conn = connect_readonly(path)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return [
            {
                "table": table,
                "columns": [
                    {"name": col[1], "type": col[2]}
                    for col in conn.execute(f"PRAGMA table_info({table})")
                ],
            }
            for table in tables
        ]
    finally:
        conn.close()
