"""Read side of the console store: parse filters, run SQL, return plain JSON-ready dicts.

Kept apart from the HTTP layer so the JSON API and the HTML UI share one implementation
of every filter. Parsing helpers raise ``QueryError`` (the API turns it into a 400).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import NamedTuple

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic reads it on Python < 3.12

from otel_lab.console.model import (
    AggregationTemporality,
    LogRow,
    MetricRow,
    SpanKind,
    SpanRow,
    SQLValue,
    StatusCode,
    TraceSummaryRow,
)
from otel_lab.jsontypes import JSONArray, JSONObject, JSONValue

STATUS_BY_NAME = {code.name.lower(): code for code in StatusCode}
TEMPORALITIES = {t.value: t.name for t in AggregationTemporality if t}
# Severity number ranges (OTel log data model): name -> lowest number of its range.
SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
_SEVERITY_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL", "ERR": "ERROR"}

MAX_LIMIT = 1000
INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT = re.compile(r"[+-]?\d+")
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")


class QueryError(ValueError):
    """A request parameter is malformed; the message says which and why."""


# --------------------------------------------------------------------------- parsing


def parse_trace_id(value: str) -> bytes:
    if not _TRACE_ID.fullmatch(value):
        raise QueryError(f"trace id {value[:64]!r} is not 32 hex characters")
    return bytes.fromhex(value)


def parse_span_id(value: str) -> bytes:
    if not _SPAN_ID.fullmatch(value):
        raise QueryError(f"span id {value[:64]!r} is not 16 hex characters")
    return bytes.fromhex(value)


def parse_time(value: str | None, name: str) -> int | None:
    """Unix nanoseconds, or an ISO 8601 timestamp (naive means UTC)."""
    if value is None or value == "":
        return None
    value = value.strip()
    if _INT.fullmatch(value):
        ns = int(value)
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise QueryError(
                f"{name}={value[:64]!r} is neither unix nanoseconds nor an ISO 8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ns = (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    if not 0 <= ns <= INT64_MAX:
        raise QueryError(f"{name} is out of range (1970 to 2262)")
    return ns


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration_seconds(value: str, name: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``1h30m`` or plain seconds -> seconds."""
    text = value.strip().lower().replace(" ", "")
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        pos = match.end()
    if not text or pos != len(text):
        raise QueryError(f"{name}={value[:64]!r} is not a duration like 90s, 15m, 24h or 7d")
    return total


def parse_status(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    code = STATUS_BY_NAME.get(value.strip().lower())
    if code is None:
        raise QueryError(f"status={value[:64]!r}: use error, ok or unset")
    return code


def parse_severity(value: str | None) -> int | None:
    """A severity name (INFO, WARN, ...) or number 1-24: the minimum to show."""
    if value is None or value == "":
        return None
    value = value.strip()
    if _INT.fullmatch(value):
        number = int(value)
        if not 1 <= number <= 24:
            raise QueryError("severity number must be between 1 and 24")
        return number
    name = value.upper()
    name = _SEVERITY_ALIASES.get(name, name)
    if name not in SEVERITIES:
        raise QueryError(f"severity={value[:64]!r}: use one of {', '.join(SEVERITIES)} or 1-24")
    return SEVERITIES[name]


@dataclass(frozen=True)
class AttrFilter:
    """``key=value``; the value matches a string, or a number/bool spelled the same way."""

    key: str
    candidates: tuple[str | int | float, ...]

    @property
    def path(self) -> str:
        return f'$."{self.key}"'


def check_attr_key(key: str) -> str:
    """``key`` if it can stand in a JSON path (``$."key"``); SQLite refuses quotes,
    backslashes and control characters there."""
    if '"' in key or "\\" in key or any(ord(c) < 32 for c in key):
        raise QueryError(f"attr key {key[:64]!r} must not contain quotes, backslashes or controls")
    return key


def parse_attr(value: str) -> AttrFilter:
    key, sep, raw = value.partition("=")
    key = key.strip()
    if not sep or not key:
        raise QueryError(f"attr={value[:64]!r} must look like key=value")
    check_attr_key(key)
    candidates: list[str | int | float] = [raw]
    if _INT.fullmatch(raw):
        if -INT64_MAX - 1 <= int(raw) <= INT64_MAX:
            candidates.append(int(raw))
    else:
        try:
            number = float(raw)
        except ValueError:
            pass
        else:
            if number == number and abs(number) != float("inf"):
                candidates.append(number)
    if raw.lower() in ("true", "false"):
        candidates.append(1 if raw.lower() == "true" else 0)
    return AttrFilter(key, tuple(candidates))


def _attr_sql(filters: list[AttrFilter], params: list[SQLValue]) -> list[str]:
    """Match span/log/point attributes, or the attributes of the resource that sent them."""
    conditions = []
    for f in filters:
        marks = ",".join("?" * len(f.candidates))
        conditions.append(
            f"(json_extract(attributes, ?) IN ({marks}) OR resource_id IN "
            f"(SELECT id FROM resources WHERE json_extract(attributes, ?) IN ({marks})))"
        )
        params.extend((f.path, *f.candidates, f.path, *f.candidates))
    return conditions


# --------------------------------------------------------------------------- helpers


def _json(text: str | None, default: JSONValue) -> JSONValue:
    return json.loads(text) if text else default


def json_object(text: str | None) -> JSONObject:
    """A stored attribute set (a JSON object, or NULL for none)."""
    value = json.loads(text) if text else None
    return value if isinstance(value, dict) else {}


def _hex(raw: bytes | None) -> str | None:
    return raw.hex() if raw else None


class _Lookups:
    """Resources and scopes referenced by a result, fetched once per response."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.resources: dict[int, JSONObject] = {}
        self.scopes: dict[int, JSONObject] = {}

    def load(self, resource_ids: set[int], scope_ids: set[int]) -> None:
        missing = [i for i in resource_ids if i not in self.resources]
        if missing:
            marks = ",".join("?" * len(missing))
            rows = self.conn.execute(
                f"SELECT id, attributes FROM resources WHERE id IN ({marks})", missing
            )
            for rid, attrs in rows:
                self.resources[rid] = json_object(attrs)
        missing = [i for i in scope_ids if i not in self.scopes]
        if missing:
            marks = ",".join("?" * len(missing))
            rows = self.conn.execute(
                f"SELECT id, name, version FROM scopes WHERE id IN ({marks})", missing
            )
            for sid, name, version in rows:
                self.scopes[sid] = {"name": name, "version": version or ""}

    def resource(self, rid: int) -> JSONObject:
        return self.resources.get(rid, {})

    def scope(self, sid: int) -> JSONObject:
        return self.scopes.get(sid, {"name": "", "version": ""})


# --------------------------------------------------------------------------- traces


@dataclass
class TraceFilter:
    service: str | None = None
    name: str | None = None
    status: int | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    attrs: list[AttrFilter] = field(default_factory=list)
    limit: int = 20
    order: str = "start"


_TRACE_COLUMNS = (
    "trace_id, start_ns, end_ns, duration_ns, span_count, error_count,"
    " root_name, root_service, has_root, services"
)


@with_config(ConfigDict(extra="forbid"))
class TraceSummary(TypedDict):
    """One trace in a list of traces (``/api/traces``, dashboards, alert examples); also
    the model ``/api/openapi.json`` shows for it (routes/schemas.py)."""

    trace_id: str
    root_span_name: str | None
    root_service_name: str | None
    has_root: bool
    start_time_unix_nano: int
    end_time_unix_nano: int
    duration_ms: float
    span_count: int
    error_count: int
    services: list[str]


def _trace_summary(row: TraceSummaryRow) -> TraceSummary:
    tid, start, end, duration, spans, errors, root_name, root_service, has_root, services = row
    return {
        "trace_id": tid.hex(),
        "root_span_name": root_name,
        "root_service_name": root_service,
        "has_root": bool(has_root),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": duration / 1e6,
        "span_count": spans,
        "error_count": errors,
        "services": sorted(json.loads(services)),
    }


# A span filter matching at most this many spans is evaluated as one indexed IN (...) list;
# a broader one by walking traces in result order and stopping at the limit.
IN_LIST_MAX_SPANS = 5000


def find_traces(conn: sqlite3.Connection, f: TraceFilter) -> list[TraceSummary]:
    """Traces that contain one span matching every span filter (service, name, status,
    attributes); time window and duration apply to the whole trace."""
    indexed: list[str] = []  # span conditions an index can answer
    indexed_params: list[SQLValue] = []
    if f.service:
        indexed.append("service_name = ?")
        indexed_params.append(f.service)
    if f.name:
        indexed.append("name = ?")
        indexed_params.append(f.name)
    if f.status == StatusCode.ERROR:
        # A literal (not a parameter) so the partial index on errors applies.
        indexed.append(f"status_code = {StatusCode.ERROR:d}")
    if indexed and f.since_ns is not None:  # a span never starts before its trace
        indexed.append("start_ns >= ?")
        indexed_params.append(f.since_ns)
    span_conditions, span_params = list(indexed), list(indexed_params)
    if f.status is not None and f.status != StatusCode.ERROR:
        span_conditions.append(f"status_code = {int(f.status)}")
    span_conditions += _attr_sql(f.attrs, span_params)

    conditions: list[str] = []
    params: list[SQLValue] = []
    if f.since_ns is not None:
        conditions.append("start_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        conditions.append("start_ns <= ?")
        params.append(f.until_ns)
    if f.min_duration_ns is not None:
        conditions.append("duration_ns >= ?")
        params.append(f.min_duration_ns)
    if f.max_duration_ns is not None:
        conditions.append("duration_ns <= ?")
        params.append(f.max_duration_ns)
    if span_conditions:
        # Errors are rare, so their partial index beats any other; without statistics the
        # planner would rather scan every span of the service.
        source = "spans INDEXED BY spans_errors" if f.status == StatusCode.ERROR else "spans"
        narrow = False
        if indexed:
            (matching,) = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE {' AND '.join(indexed)}"
                f" LIMIT {IN_LIST_MAX_SPANS + 1})",
                indexed_params,
            ).fetchone()
            narrow = matching <= IN_LIST_MAX_SPANS
        where_spans = " AND ".join(span_conditions)
        if narrow:
            conditions.append(f"trace_id IN (SELECT trace_id FROM {source} WHERE {where_spans})")
        else:
            # Common match: walk traces newest/slowest first, check their few spans, stop early.
            conditions.append(
                "EXISTS (SELECT 1 FROM spans INDEXED BY spans_trace"
                f" WHERE spans.trace_id = traces.trace_id AND {where_spans})"
            )
        params += span_params
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = "duration_ns DESC" if f.order == "duration" else "start_ns DESC"
    sql = f"SELECT {_TRACE_COLUMNS} FROM traces {where} ORDER BY {order} LIMIT ?"
    return [_trace_summary(r) for r in conn.execute(sql, [*params, f.limit])]


_SPAN_COLUMNS = ", ".join(SpanRow._fields)
_span_row = partial(tuple.__new__, SpanRow)


def _kind(kind: int) -> str:
    """The kind's name; unspecified and unknown kinds read as INTERNAL (as the spec says)."""
    if kind in SpanKind._value2member_map_ and kind != SpanKind.UNSPECIFIED:
        return SpanKind(kind).name
    return SpanKind.INTERNAL.name


def _status(code: int) -> str:
    return StatusCode(code).name if code in StatusCode._value2member_map_ else "UNSET"


def _span_dict(r: SpanRow, lookups: _Lookups) -> JSONObject:
    return {
        "trace_id": r.trace_id.hex(),
        "span_id": r.span_id.hex(),
        "parent_span_id": _hex(r.parent_span_id),
        "name": r.name,
        "kind": _kind(r.kind),
        "service_name": r.service_name,
        "start_time_unix_nano": r.start_ns,
        "end_time_unix_nano": r.end_ns,
        "duration_ms": r.duration_ns / 1e6,
        "status": {
            "code": _status(r.status_code),
            "message": r.status_message or "",
        },
        "attributes": _json(r.attributes, {}),
        "events": _json(r.events, []),
        "links": _json(r.links, []),
        "resource": lookups.resource(r.resource_id),
        "scope": lookups.scope(r.scope_id),
    }


def get_trace(conn: sqlite3.Connection, trace_id: bytes) -> list[JSONObject]:
    """All spans of a trace, ordered by start time (empty when the trace is unknown)."""
    rows = list(map(_span_row, conn.execute(
        f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_ns, rowid",
        (trace_id,),
    )))  # fmt: skip
    lookups = _Lookups(conn)
    lookups.load({r.resource_id for r in rows}, {r.scope_id for r in rows})
    return [_span_dict(r, lookups) for r in rows]


def get_span(conn: sqlite3.Connection, trace_id: bytes, span_id: bytes) -> JSONObject | None:
    """One span with everything stored about it, or None."""
    row = conn.execute(
        f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = ? AND span_id = ?",
        (trace_id, span_id),
    ).fetchone()
    if row is None:
        return None
    span = _span_row(row)
    lookups = _Lookups(conn)
    lookups.load({span.resource_id}, {span.scope_id})
    return _span_dict(span, lookups)


# Waterfall row flags.
FLAG_EVENTS, FLAG_EXCEPTION, FLAG_LINKS, FLAG_ORPHAN = 1, 2, 4, 8
WATERFALL_FIELDS = (
    "span_id", "parent", "name", "service", "kind", "offset_ns", "duration_ns", "self_ns",
    "status", "depth", "subtree_end", "flags", "logs", "status_message",
)  # fmt: skip


class _WaterfallSpan(NamedTuple):
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: int
    service_name: str
    start_ns: int
    end_ns: int
    duration_ns: int
    status_code: int
    status_message: str | None
    has_events: int
    has_exception: int
    has_links: int


_waterfall_span = partial(tuple.__new__, _WaterfallSpan)


def trace_waterfall(conn: sqlite3.Connection, trace_id: bytes) -> JSONObject | None:
    """A trace as compact rows in tree (depth-first) order, for the waterfall UI.

    Why compact: a 10,000-span trace must load and render in well under a second, so each
    span is one short array (see ``WATERFALL_FIELDS``) without attributes, which the UI
    fetches per span on demand. ``parent`` is the row index of the parent (-1 for a root or
    a span whose parent never arrived: flag FLAG_ORPHAN); ``subtree_end`` is the index after
    the span's last descendant, so collapsing a row is a jump. ``self_ns`` is the span's
    duration minus the union of its children's intervals (clipped to the span).
    """
    rows = list(map(_waterfall_span, conn.execute(
        "SELECT span_id, parent_span_id, name, kind, service_name, start_ns, end_ns,"
        " duration_ns, status_code, status_message, events IS NOT NULL,"
        ' coalesce(instr(events, \'"name":"exception"\') > 0, 0), links IS NOT NULL'
        " FROM spans WHERE trace_id = ? ORDER BY start_ns, rowid",
        (trace_id,),
    )))  # fmt: skip
    if not rows:
        return None
    log_counts = dict(
        conn.execute(
            "SELECT span_id, count(*) FROM logs WHERE trace_id = ? GROUP BY span_id", (trace_id,)
        ).fetchall()
    )
    by_id = {r.span_id: i for i, r in enumerate(rows)}
    children: list[list[int]] = [[] for _ in rows]
    roots: list[int] = []
    orphan = [False] * len(rows)
    for i, r in enumerate(rows):
        parent = by_id.get(r.parent_span_id) if r.parent_span_id is not None else None
        if parent is None or parent == i:
            roots.append(i)
            orphan[i] = r.parent_span_id is not None
        else:
            children[parent].append(i)
    start = min(r.start_ns for r in rows)
    end = max(r.end_ns for r in rows)
    services: dict[str, int] = {}
    out: list[JSONArray] = []
    position = [0] * len(rows)
    visited = [False] * len(rows)
    # Iterative depth-first walk; ("exit", i) fixes subtree_end once i's children are out.
    stack: list[tuple[bool, int, int, int]] = [(False, i, 0, -1) for i in reversed(roots)]
    while stack:
        leaving, i, depth, parent_row = stack.pop()
        if leaving:
            out[position[i]][10] = len(out)
            continue
        if visited[i]:  # a cycle in parent ids: show the span once
            continue
        visited[i] = True
        r = rows[i]
        service = services.setdefault(r.service_name, len(services))
        own_start, own_end = r.start_ns, r.end_ns
        busy = 0
        cursor = own_start
        for c in children[i]:  # children are in start order: merge their intervals
            c_start, c_end = max(rows[c].start_ns, cursor), min(rows[c].end_ns, own_end)
            if c_end > c_start:
                busy += c_end - c_start
                cursor = c_end
        flags = (
            (FLAG_EVENTS if r.has_events else 0) | (FLAG_EXCEPTION if r.has_exception else 0)
            | (FLAG_LINKS if r.has_links else 0) | (FLAG_ORPHAN if orphan[i] else 0)
        )  # fmt: skip
        position[i] = len(out)
        out.append([
            r.span_id.hex(), parent_row, r.name, service, _kind(r.kind), r.start_ns - start,
            r.duration_ns, max(r.duration_ns - busy, 0), r.status_code, depth, 0, flags,
            log_counts.get(r.span_id, 0), r.status_message or "",
        ])  # fmt: skip
        stack.append((True, i, depth, parent_row))
        for c in reversed(children[i]):
            stack.append((False, c, depth + 1, position[i]))
    for i in range(len(rows)):  # unreachable spans (only in a parent cycle): append as roots
        if not visited[i]:
            r = rows[i]
            out.append([r.span_id.hex(), -1, r.name,
                        services.setdefault(r.service_name, len(services)), _kind(r.kind),
                        r.start_ns - start, r.duration_ns, r.duration_ns, r.status_code, 0,
                        len(out) + 1, FLAG_ORPHAN, log_counts.get(r.span_id, 0),
                        r.status_message or ""])  # fmt: skip
    return {
        "trace_id": trace_id.hex(),
        "start_time_unix_nano": start,
        "duration_ns": end - start,
        "span_count": len(rows),
        "error_count": sum(1 for r in rows if r.status_code == StatusCode.ERROR),
        "log_count": sum(log_counts.values()),
        "services": list(services),
        "fields": list(WATERFALL_FIELDS),
        "spans": out,
    }


# --------------------------------------------------------------------------- logs


@dataclass
class LogFilter:
    service: str | None = None
    min_severity: int | None = None
    text: str | None = None
    trace_id: bytes | None = None
    span_id: bytes | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    attrs: list[AttrFilter] = field(default_factory=list)
    limit: int = 100
    oldest_first: bool = False


_LOG_COLUMNS = ", ".join(LogRow._fields)
_log_row = partial(tuple.__new__, LogRow)


def severity_name(number: int) -> str:
    name = ""
    for candidate, lowest in SEVERITIES.items():
        if number >= lowest:
            name = candidate
    return name


def find_logs(conn: sqlite3.Connection, f: LogFilter) -> list[JSONObject]:
    conditions: list[str] = []
    params: list[SQLValue] = []
    if f.trace_id is not None:
        conditions.append("trace_id = ?")
        params.append(f.trace_id)
    if f.span_id is not None:
        conditions.append("span_id = ?")
        params.append(f.span_id)
    if f.service:
        conditions.append("service_name = ?")
        params.append(f.service)
    if f.min_severity is not None:
        conditions.append("severity_number >= ?")
        params.append(f.min_severity)
    if f.text:
        escaped = f.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append("body LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    if f.since_ns is not None:
        conditions.append("time_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        conditions.append("time_ns <= ?")
        params.append(f.until_ns)
    conditions += _attr_sql(f.attrs, params)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    direction = "ASC" if f.oldest_first else "DESC"
    rows = list(map(_log_row, conn.execute(
        f"SELECT {_LOG_COLUMNS} FROM logs {where} ORDER BY time_ns {direction}, rowid {direction}"
        " LIMIT ?",
        [*params, f.limit],
    )))  # fmt: skip
    lookups = _Lookups(conn)
    lookups.load({r.resource_id for r in rows}, {r.scope_id for r in rows})
    return [
        {
            "time_unix_nano": r.time_ns,
            "observed_time_unix_nano": r.observed_ns,
            "severity_number": r.severity_number,
            "severity_text": r.severity_text or severity_name(r.severity_number),
            "body": json.loads(r.body) if r.body_is_json and r.body is not None else r.body,
            "attributes": _json(r.attributes, {}),
            "trace_id": _hex(r.trace_id),
            "span_id": _hex(r.span_id),
            "event_name": r.event_name,
            "service_name": r.service_name,
            "resource": lookups.resource(r.resource_id),
            "scope": lookups.scope(r.scope_id),
        }
        for r in rows
    ]


# --------------------------------------------------------------------------- catalogues


def list_services(conn: sqlite3.Connection) -> list[JSONObject]:
    rows = conn.execute(
        "SELECT name, first_seen_ns, last_seen_ns, span_count, log_count, point_count"
        " FROM services ORDER BY name"
    )
    return [
        {
            "name": name,
            "first_seen_unix_nano": first,
            "last_seen_unix_nano": last,
            "span_count": spans,
            "log_count": logs,
            "metric_point_count": points,
        }
        for name, first, last, spans, logs, points in rows
    ]


def list_operations(conn: sqlite3.Connection, service: str) -> list[JSONObject]:
    rows = conn.execute(
        "SELECT name, kind FROM operations WHERE service_name = ? ORDER BY name, kind", (service,)
    )
    return [{"name": name, "kind": _kind(kind)} for name, kind in rows]


_METRIC_COLUMNS = ", ".join(MetricRow._fields)


def _metric_info(row: MetricRow, services: list[str]) -> JSONObject:
    _id, name, kind, unit, description, monotonic, temporality = row
    info: JSONObject = {
        "name": name,
        "type": kind,
        "unit": unit or "",
        "description": description or "",
        "services": services,
    }
    if monotonic is not None:
        info["is_monotonic"] = bool(monotonic)
    if temporality:
        info["temporality"] = TEMPORALITIES.get(temporality, "UNSPECIFIED")
    return info


def list_metrics(conn: sqlite3.Connection) -> list[JSONObject]:
    # Metrics first: a metric and its services are committed together, so every metric read
    # here has its services in the next read (the other order could see a metric without).
    rows = list(
        map(MetricRow._make, conn.execute(f"SELECT {_METRIC_COLUMNS} FROM metrics ORDER BY name"))
    )
    services: dict[int, list[str]] = {}
    for mid, service in conn.execute(
        "SELECT metric_id, service_name FROM metric_services ORDER BY service_name"
    ):
        services.setdefault(mid, []).append(service)
    return [_metric_info(row, services.get(row.id, [])) for row in rows]


@dataclass
class PointFilter:
    service: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    attrs: list[AttrFilter] = field(default_factory=list)
    limit: int = 1000


def metric_points(conn: sqlite3.Connection, name: str, f: PointFilter) -> JSONObject | None:
    """A metric's description and its most recent points (oldest first), or None."""
    found = conn.execute(f"SELECT {_METRIC_COLUMNS} FROM metrics WHERE name = ?", (name,))
    meta = next(map(MetricRow._make, found), None)
    if meta is None:
        return None
    services = [
        s
        for (s,) in conn.execute(
            "SELECT service_name FROM metric_services WHERE metric_id = ? ORDER BY service_name",
            (meta.id,),
        )
    ]
    conditions = ["metric_id = ?"]
    params: list[SQLValue] = [meta.id]
    if f.service:
        conditions.append("service_name = ?")
        params.append(f.service)
    if f.since_ns is not None:
        conditions.append("time_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        conditions.append("time_ns <= ?")
        params.append(f.until_ns)
    conditions += _attr_sql(f.attrs, params)
    rows = conn.execute(
        "SELECT service_name, attributes, start_ns, time_ns, value, data, exemplars, resource_id"
        f" FROM metric_points WHERE {' AND '.join(conditions)}"
        " ORDER BY time_ns DESC, rowid DESC LIMIT ?",
        [*params, f.limit],
    ).fetchall()
    rows.reverse()
    lookups = _Lookups(conn)
    lookups.load({rid for *_, rid in rows}, set())
    points = []
    for service, attrs, start, ts, value, data, exemplars, rid in rows:
        point: JSONObject = {
            "service_name": service,
            "attributes": _json(attrs, {}),
            "start_time_unix_nano": start,
            "time_unix_nano": ts,
        }
        if data is None:
            point["value"] = value
        else:
            point.update(json.loads(data))
        point["exemplars"] = _json(exemplars, [])
        point["resource"] = lookups.resource(rid)
        points.append(point)
    info = _metric_info(meta, services)
    info["points"] = points
    return info


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts from the catalogues (cheap: no scan of the big tables)."""
    spans, logs, points, services = conn.execute(
        "SELECT coalesce(sum(span_count), 0), coalesce(sum(log_count), 0),"
        " coalesce(sum(point_count), 0), count(*) FROM services"
    ).fetchone()
    return {"spans": spans, "logs": logs, "metric_points": points, "services": services}
