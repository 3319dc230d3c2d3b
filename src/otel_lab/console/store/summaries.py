"""What the writer derives from new rows in the same transaction: the services, operations
and per-trace summary tables, and RED (rate, errors, duration) per service, route and minute.

Kept as tables so the UI never aggregates spans to list traces or draw RED: percentiles over
any window come from merging a few log-scaled histograms instead of reading every span.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from otel_lab.console.model import (
    LogRow,
    PointRow,
    RedRow,
    ServiceSummaryRow,
    SpanKind,
    SpanRow,
    StatusCode,
    TraceSummaryRow,
)
from otel_lab.jsontypes import JSONObject, JSONValue

MINUTE_NS = 60_000_000_000
# Latency histogram buckets: 8 per power of two (about 9% wide), as in HDR-style sketches.
HIST_SUB_BUCKETS = 8
# RED keeps at most this many routes per service; more fold into OTHER_ROUTES (a service
# that names server spans after raw paths must not grow the table without bound).
MAX_ROUTES_PER_SERVICE = 300
OTHER_ROUTES = "(other routes)"
_RED_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)
_COMPACT = (",", ":")


def hist_bucket(duration_ns: int) -> int:
    """Log-scaled bucket of a duration: 8 buckets per power of two of nanoseconds."""
    return int(math.log2(duration_ns) * HIST_SUB_BUCKETS) if duration_ns > 1 else 0


def hist_bounds(bucket: int) -> tuple[float, float]:
    """[lower, upper) of a bucket, in nanoseconds."""
    if bucket <= 0:
        return 0.0, 2 ** (1 / HIST_SUB_BUCKETS)
    return 2 ** (bucket / HIST_SUB_BUCKETS), 2 ** ((bucket + 1) / HIST_SUB_BUCKETS)


# --------------------------------------------------------------------------- summaries


@dataclass(slots=True)
class _Service:
    first_ns: int
    last_ns: int
    spans: int = 0
    logs: int = 0
    points: int = 0

    def seen(self, start_ns: int, end_ns: int) -> None:
        self.first_ns = min(self.first_ns, start_ns)
        self.last_ns = max(self.last_ns, end_ns)


@dataclass(slots=True)
class _Trace:
    start_ns: int
    end_ns: int
    root_name: str
    root_service: str
    has_root: int
    spans: int = 1
    errors: int = 0
    services: set[str] = field(default_factory=set)

    def add(self, s: SpanRow) -> None:
        if s.start_ns < self.start_ns:
            self.start_ns = s.start_ns
            if not self.has_root:
                self.root_name, self.root_service = s.name, s.service_name
        self.end_ns = max(self.end_ns, s.end_ns)
        self.spans += 1
        self.errors += s.status_code == StatusCode.ERROR
        if s.parent_span_id is None and not self.has_root:
            self.root_name, self.root_service, self.has_root = s.name, s.service_name, 1
        self.services.add(s.service_name)

    def row(self, trace_id: bytes) -> TraceSummaryRow:
        """The ``traces`` table's columns."""
        services = _services_json(tuple(sorted(self.services)))
        duration = self.end_ns - self.start_ns
        return (trace_id, self.start_ns, self.end_ns, duration, self.spans, self.errors,
                self.root_name, self.root_service, self.has_root, services)  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _services_json(services: tuple[str, ...]) -> str:
    """A trace's services as a JSON array; few distinct sets, so each is encoded once."""
    return json.dumps(services, separators=_COMPACT)


@dataclass
class Summaries:
    """Rows for the services, operations and traces tables."""

    services: list[ServiceSummaryRow]
    operations: set[tuple[str, str, int]]
    traces: list[TraceSummaryRow]


def summarise(spans: list[SpanRow], logs: list[LogRow], points: list[PointRow]) -> Summaries:
    """The summary tables' rows, from new rows only (the UPSERTs add them up)."""
    services: dict[str, _Service] = {}
    operations: set[tuple[str, str, int]] = set()
    traces: dict[bytes, _Trace] = {}
    for s in spans:
        svc = services.get(s.service_name)
        if svc is None:
            svc = services[s.service_name] = _Service(s.start_ns, s.end_ns)
        else:  # svc.seen(), inlined: once per span
            if s.start_ns < svc.first_ns:
                svc.first_ns = s.start_ns
            if s.end_ns > svc.last_ns:
                svc.last_ns = s.end_ns
        svc.spans += 1
        operations.add((s.service_name, s.name, s.kind))
        t = traces.get(s.trace_id)
        if t is None:
            traces[s.trace_id] = _Trace(
                s.start_ns, s.end_ns, s.name, s.service_name, int(s.parent_span_id is None),
                errors=int(s.status_code == StatusCode.ERROR), services={s.service_name},
            )  # fmt: skip
        else:
            t.add(s)
    for service_name, ts in _stamps(logs):
        _service(services, service_name, ts).logs += 1
    for service_name, ts in _stamps(points):
        _service(services, service_name, ts).points += 1
    return Summaries(
        services=[(name, v.first_ns, v.last_ns, v.spans, v.logs, v.points)
                  for name, v in services.items()],
        operations=operations,
        traces=[t.row(tid) for tid, t in traces.items()],
    )  # fmt: skip


def _stamps(rows: Iterable[LogRow | PointRow]) -> Iterable[tuple[str, int]]:
    return ((r.service_name, r.time_ns) for r in rows)


def _service(services: dict[str, _Service], name: str, ts: int) -> _Service:
    svc = services.get(name)
    if svc is None:
        svc = services[name] = _Service(ts, ts)
    else:
        svc.seen(ts, ts)
    return svc


# --------------------------------------------------------------------------- RED


@dataclass(slots=True)
class _Red:
    """One (service, route, minute) aggregate."""

    min_ns: int
    max_ns: int
    slow_trace_id: bytes
    count: int = 0
    errors: int = 0
    sum_ns: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    error_trace_id: bytes | None = None

    def add(self, s: SpanRow) -> None:
        duration = s.duration_ns
        self.count += 1
        self.sum_ns += duration
        if s.status_code == StatusCode.ERROR:
            self.errors += 1
            if self.error_trace_id is None:
                self.error_trace_id = s.trace_id
        self.min_ns = min(self.min_ns, duration)
        if duration > self.max_ns:
            self.max_ns = duration
            self.slow_trace_id = s.trace_id
        bucket = hist_bucket(duration)
        self.hist[bucket] = self.hist.get(bucket, 0) + 1


def route_of(
    s: SpanRow, attrs: Mapping[str, JSONValue] | None = None
) -> tuple[str, list[str] | None]:
    """``METHOD http.route`` when the span has ``http.route`` (a template, so
    low-cardinality), otherwise the span name; with the trace-search filters that find the
    spans of this route, for the jump to example traces. ``attrs`` are the span's decoded
    attributes when the decoder kept them; otherwise its JSON column is parsed."""
    if attrs is None:
        text = s.attributes
        if not text or '"http.route"' not in text:
            return s.name, None
        attrs = json.loads(text)
    http_route = attrs.get("http.route")
    if not isinstance(http_route, str) or not http_route:
        return s.name, None
    filters = [f"http.route={http_route}"]
    route = http_route
    for method_key in ("http.request.method", "http.method"):
        method = attrs.get(method_key)
        if isinstance(method, str) and method:
            route = f"{method} {http_route}"
            filters.append(f"{method_key}={method}")
            break
    return route, filters


class RedRoutes:
    """The routes RED has per service, to fold those beyond the cap into one."""

    def __init__(self) -> None:
        self._routes: dict[str, set[str]] = {}

    def clear(self) -> None:
        self._routes.clear()

    def key(self, db: sqlite3.Connection, service: str, route: str) -> str:
        """The route as stored."""
        routes = self._routes.get(service)
        if routes is None:
            found = db.execute("SELECT DISTINCT route FROM red WHERE service_name = ?", (service,))
            routes = self._routes[service] = {r for (r,) in found}
        if route in routes:
            return route
        if len(routes) >= MAX_ROUTES_PER_SERVICE:
            return OTHER_ROUTES
        routes.add(route)
        return route

    def rows(
        self,
        db: sqlite3.Connection,
        spans: list[SpanRow],
        decoded: dict[tuple[bytes, bytes], JSONObject] | None = None,
    ) -> list[RedRow]:
        """Per (service, route, minute) aggregates of SERVER and CONSUMER spans, as the
        ``red`` table's columns. ``decoded``: the spans' attributes as the decoder kept
        them, by (trace_id, span_id)."""
        decoded = decoded or {}
        agg: dict[tuple[str, str, int], _Red] = {}
        searches: dict[tuple[str, str], str] = {}
        for s in spans:
            if s.kind not in _RED_KINDS:
                continue
            route, filters = route_of(s, decoded.get((s.trace_id, s.span_id)))
            route = self.key(db, s.service_name, route)
            key = (s.service_name, route, s.start_ns // MINUTE_NS)
            row = agg.get(key)
            if row is None:
                row = agg[key] = _Red(s.duration_ns, s.duration_ns, s.trace_id)
                if (s.service_name, route) not in searches:
                    searches[(s.service_name, route)] = _search(s, route, filters)
            row.add(s)
        return [
            (service, route, minute, r.count, r.errors, r.sum_ns, r.min_ns, r.max_ns,
             json.dumps(r.hist, separators=_COMPACT), r.slow_trace_id, r.error_trace_id,
             searches.get((service, route)) or None)
            for (service, route, minute), r in agg.items()
        ]  # fmt: skip


def _search(s: SpanRow, route: str, filters: list[str] | None) -> str:
    """The trace-search filter (JSON) of a RED row's example traces ("" for none)."""
    if route == OTHER_ROUTES:
        return ""
    if filters is None:
        return json.dumps({"name": s.name}, separators=_COMPACT)
    return json.dumps({"attr": filters}, separators=_COMPACT)
