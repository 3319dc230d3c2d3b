"""The store's tables, the connections to them, and the statements the writer runs.

Ids are stored as BLOBs (16/8 bytes instead of 32/16 hex characters) to keep spans and
their indexes small; the API speaks lowercase hex. WAL lets the API's read connections
run while the writer commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

from otel_lab.console.model import SQLValue, StatusCode

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;

-- One row per distinct resource attribute set (ids are content hashes, see otlp.stable_id).
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY,
    service_name TEXT NOT NULL,
    attributes TEXT
);
CREATE TABLE IF NOT EXISTS scopes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT,
    attributes TEXT
);

CREATE TABLE IF NOT EXISTS spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    status_message TEXT,
    attributes TEXT,
    events TEXT,
    links TEXT,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL
);
-- Unique: an exporter retry of the same batch does not duplicate spans.
CREATE UNIQUE INDEX IF NOT EXISTS spans_trace ON spans (trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_service_time ON spans (service_name, start_ns);
CREATE INDEX IF NOT EXISTS spans_name ON spans (name, start_ns);
CREATE INDEX IF NOT EXISTS spans_duration ON spans (duration_ns);
-- Errors are rare: a partial index finds them without indexing every span's status
-- ($ERROR: StatusCode.ERROR).
CREATE INDEX IF NOT EXISTS spans_errors ON spans (start_ns) WHERE status_code = $ERROR;

-- Per-trace summary kept by the writer, so listing traces never aggregates spans.
CREATE TABLE IF NOT EXISTS traces (
    trace_id BLOB PRIMARY KEY,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    root_name TEXT,
    root_service TEXT,
    has_root INTEGER NOT NULL,
    services TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_start ON traces (start_ns);
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration_ns);

CREATE TABLE IF NOT EXISTS logs (
    time_ns INTEGER NOT NULL,
    observed_ns INTEGER,
    severity_number INTEGER NOT NULL,
    severity_text TEXT,
    body TEXT,
    body_is_json INTEGER NOT NULL,
    attributes TEXT,
    trace_id BLOB,
    span_id BLOB,
    event_name TEXT,
    service_name TEXT NOT NULL,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_time ON logs (time_ns);
CREATE INDEX IF NOT EXISTS logs_service_time ON logs (service_name, time_ns);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id) WHERE trace_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    unit TEXT,
    description TEXT,
    is_monotonic INTEGER,
    temporality INTEGER
);
CREATE TABLE IF NOT EXISTS metric_services (
    metric_id INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    PRIMARY KEY (metric_id, service_name)
) WITHOUT ROWID;
-- value has no declared type on purpose: ints stay ints, doubles stay doubles.
CREATE TABLE IF NOT EXISTS metric_points (
    metric_id INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    attributes TEXT,
    start_ns INTEGER,
    time_ns INTEGER NOT NULL,
    value,
    data TEXT,
    exemplars TEXT,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metric_points_metric_time ON metric_points (metric_id, time_ns);
-- For retention: the oldest points across all metrics.
CREATE INDEX IF NOT EXISTS metric_points_time ON metric_points (time_ns);

-- RED (rate, errors, duration) per service, route and minute, aggregated by the writer from
-- SERVER and CONSUMER spans. hist is a JSON object {bucket: count} of log-scaled durations
-- (see summaries.hist_bucket), so percentiles over any window come from merging a few rows
-- instead of reading every span.
CREATE TABLE IF NOT EXISTS red (
    service_name TEXT NOT NULL,
    route TEXT NOT NULL,
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    sum_ns INTEGER NOT NULL,
    min_ns INTEGER NOT NULL,
    max_ns INTEGER NOT NULL,
    hist TEXT NOT NULL,
    slow_trace_id BLOB,
    error_trace_id BLOB,
    search TEXT,
    PRIMARY KEY (service_name, route, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS red_minute ON red (minute);

-- Series scraped from the services' /metrics (see console.scrape): Prometheus' data model.
-- A sample is written only when its value changed (or every few minutes), so a series holds
-- its value at every scrape of its job (prom_scrapes) until the next sample; value NULL is a
-- stale marker (the series disappeared).
CREATE TABLE IF NOT EXISTS prom_series (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS prom_samples (
    series_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prom_samples_time ON prom_samples (time_ns);
CREATE TABLE IF NOT EXISTS prom_scrapes (
    job TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    up INTEGER NOT NULL,
    instance TEXT NOT NULL,
    PRIMARY KEY (job, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prom_scrapes_time ON prom_scrapes (time_ns);
-- Exemplars as scraped (a new row only when a bucket's exemplar changes).
CREATE TABLE IF NOT EXISTS prom_exemplars (
    series_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    value REAL,
    trace_id TEXT,
    span_id TEXT,
    labels TEXT,
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prom_exemplars_time ON prom_exemplars (time_ns);

-- Small catalogues for pickers in the UI, kept by the writer.
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL DEFAULT 0,
    log_count INTEGER NOT NULL DEFAULT 0,
    point_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operations (
    service_name TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (service_name, name, kind)
) WITHOUT ROWID;
"""
SCHEMA = _SCHEMA.replace("$ERROR", f"{StatusCode.ERROR:d}")


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode: the writer's, or a query-only one for the API."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
    conn.execute("PRAGMA temp_store=MEMORY")
    if readonly:
        conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA cache_size=-16000")  # 16 MB page cache per API thread
    else:
        # 16 MB: with 64 MB, writing 60,000 spans into a store of 400,000 cost the same CPU
        # per span within noise (scripts/bench_console_cache.py), and a console under steady
        # traffic took minutes to fill the larger cache (docs/reliability.md, the soak).
        conn.execute("PRAGMA cache_size=-16000")
        # A checkpointed WAL shrinks back to this size instead of keeping its peak.
        conn.execute("PRAGMA journal_size_limit=67108864")
    return conn


def open_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection, with the schema in place and the SQL functions it uses."""
    db = connect(path)
    db.executescript(SCHEMA)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    db.execute("PRAGMA analysis_limit=1000")
    db.create_function("merge_services", 2, _merge_services, deterministic=True)
    db.create_function("merge_hist", 2, _merge_hist, deterministic=True)
    return db


def _merge_hist(old: str, new: str) -> str:
    """SQL function: sum of two JSON histograms {bucket: count}."""
    merged: dict[str, int] = json.loads(old)
    for bucket, count in json.loads(new).items():
        merged[bucket] = merged.get(bucket, 0) + count
    return json.dumps(merged, separators=(",", ":"))


def _merge_services(old: str, new: str) -> str:
    """SQL function: union of two JSON arrays of service names, sorted."""
    if old == new:
        return old
    return json.dumps(sorted(set(json.loads(old)) | set(json.loads(new))), separators=(",", ":"))


class MultiInsert:
    """``INSERT ... VALUES (..), (..), ...`` in chunks of many rows per statement.

    ``executemany`` steps once per row, and the sqlite3 module releases and re-takes the
    GIL around every step; with the receiver decoding on the other thread that hand-off
    dominates. One statement per 1024 rows keeps the writer in C, without the GIL, for
    most of a transaction. Chunk sizes are few and fixed so the prepared statements stay
    in the connection's statement cache.
    """

    CHUNKS = (1024, 128, 16)

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        self.head, self.width, self.tail = head, width, tail
        self._row = "(" + ",".join("?" * width) + ")"
        self._sql = {n: self._build(n) for n in (*self.CHUNKS, 1)}

    def _build(self, rows: int) -> str:
        return f"{self.head} VALUES {','.join([self._row] * rows)} {self.tail}"

    def run(self, db: sqlite3.Connection, rows: Sequence[tuple[SQLValue, ...]]) -> int:
        """Insert all rows; returns the number of rows changed (ignored rows excluded)."""
        changed = 0
        i, n = 0, len(rows)
        for size in self.CHUNKS:
            sql = self._sql[size]
            while n - i >= size:
                changed += db.execute(sql, list(chain.from_iterable(rows[i : i + size]))).rowcount
                i += size
        if i < n:
            changed += db.executemany(self._sql[1], rows[i:]).rowcount
        return changed


INSERT_SPANS = MultiInsert("INSERT OR IGNORE INTO spans", 16)
INSERT_LOGS = MultiInsert(
    "INSERT INTO logs (time_ns, observed_ns, severity_number, severity_text, body, body_is_json,"
    " attributes, trace_id, span_id, event_name, service_name, resource_id, scope_id)",
    13,
)
INSERT_POINTS = MultiInsert(
    "INSERT INTO metric_points (metric_id, service_name, attributes, start_ns, time_ns, value,"
    " data, exemplars, resource_id, scope_id)",
    10,
)
UPSERT_TRACES = MultiInsert(
    """INSERT INTO traces (trace_id, start_ns, end_ns, duration_ns, span_count, error_count,
                    root_name, root_service, has_root, services)""",
    10,
    """ON CONFLICT (trace_id) DO UPDATE SET
    start_ns = min(start_ns, excluded.start_ns),
    end_ns = max(end_ns, excluded.end_ns),
    duration_ns = max(end_ns, excluded.end_ns) - min(start_ns, excluded.start_ns),
    span_count = span_count + excluded.span_count,
    error_count = error_count + excluded.error_count,
    root_name = CASE
        WHEN has_root THEN root_name
        WHEN excluded.has_root OR excluded.start_ns < start_ns THEN excluded.root_name
        ELSE root_name END,
    root_service = CASE
        WHEN has_root THEN root_service
        WHEN excluded.has_root OR excluded.start_ns < start_ns THEN excluded.root_service
        ELSE root_service END,
    has_root = max(has_root, excluded.has_root),
    services = merge_services(services, excluded.services)""",
)
UPSERT_SERVICE = """
INSERT INTO services (name, first_seen_ns, last_seen_ns, span_count, log_count, point_count)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
    last_seen_ns = max(last_seen_ns, excluded.last_seen_ns),
    span_count = span_count + excluded.span_count,
    log_count = log_count + excluded.log_count,
    point_count = point_count + excluded.point_count
"""
UPSERT_RED = """
INSERT INTO red (service_name, route, minute, count, errors, sum_ns, min_ns, max_ns, hist,
                 slow_trace_id, error_trace_id, search)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service_name, route, minute) DO UPDATE SET
    count = count + excluded.count,
    errors = errors + excluded.errors,
    sum_ns = sum_ns + excluded.sum_ns,
    min_ns = min(min_ns, excluded.min_ns),
    max_ns = max(max_ns, excluded.max_ns),
    hist = merge_hist(hist, excluded.hist),
    slow_trace_id = CASE WHEN excluded.max_ns > max_ns THEN excluded.slow_trace_id
                    ELSE slow_trace_id END,
    error_trace_id = coalesce(error_trace_id, excluded.error_trace_id)
"""
UPSERT_METRIC = """
INSERT INTO metrics (id, name, type, unit, description, is_monotonic, temporality)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET type = excluded.type, unit = excluded.unit,
    description = excluded.description, is_monotonic = excluded.is_monotonic,
    temporality = excluded.temporality
"""
INSERT_RESOURCES = "INSERT OR IGNORE INTO resources VALUES (?, ?, ?)"
INSERT_SCOPES = "INSERT OR IGNORE INTO scopes VALUES (?, ?, ?, ?)"
INSERT_METRIC_SERVICES = "INSERT OR IGNORE INTO metric_services VALUES (?, ?)"
INSERT_OPERATIONS = "INSERT OR IGNORE INTO operations VALUES (?, ?, ?)"
