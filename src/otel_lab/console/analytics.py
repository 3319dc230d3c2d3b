"""Derived views over the store: service map, RED, metric series, attribute suggestions.

Each function reads a bounded amount of data whatever the store holds: the service map
scans the spans of at most ``max_traces`` traces, RED reads the writer's per-minute
aggregates (never spans), metric series read at most ``max_points`` points, suggestions
sample the most recent rows. That keeps every page fast on a store of millions of spans.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic reads it on Python < 3.12

from otel_lab.console.model import (
    AggregationTemporality,
    PointData,
    SpanKind,
    SQLValue,
    StatusCode,
)
from otel_lab.console.queries import AttrFilter, _attr_sql
from otel_lab.console.store import MINUTE_NS, hist_bounds
from otel_lab.jsontypes import JSONObject

SECOND = 1_000_000_000
DB_NODE_PREFIX = "db:"


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """A time window [since, until] in unix ns; ``bounded`` is False for "all data"."""

    since_ns: int
    until_ns: int
    bounded: bool = True

    @property
    def seconds(self) -> float:
        return max((self.until_ns - self.since_ns) / SECOND, 1e-9)


def window(since_ns: int | None, until_ns: int | None, default_seconds: float = 3600) -> Window:
    """The window a request asks for; defaults to the last hour up to now."""
    until = until_ns if until_ns is not None else time.time_ns()
    since = since_ns if since_ns is not None else until - int(default_seconds * SECOND)
    return Window(min(since, until), until)


# --------------------------------------------------------------------------- service map


NodeKind = Literal["service", "database"]
EdgeKind = Literal["http", "messaging", "database"]


@with_config(ConfigDict(extra="forbid"))
class ServiceMapNode(TypedDict):
    """A service, or a database system its client spans name."""

    id: str
    name: str
    kind: NodeKind
    spans: int
    errors: int
    server_spans: int
    server_errors: int
    error_rate: float


@with_config(ConfigDict(extra="forbid"))
class ServiceMapEdge(TypedDict):
    source: str
    target: str
    kind: EdgeKind
    errors: int
    calls: int
    rate_per_second: float
    error_rate: float
    avg_duration_ms: float


@with_config(ConfigDict(extra="forbid"))
class ServiceMap(TypedDict):
    """``GET /api/service-map``; these TypedDicts are also its OpenAPI models."""

    since_unix_nano: int
    until_unix_nano: int
    traces_scanned: int
    truncated: bool
    seconds: float
    nodes: list[ServiceMapNode]
    edges: list[ServiceMapEdge]


@dataclass
class _Node:
    id: str
    name: str
    kind: NodeKind
    spans: int = 0
    errors: int = 0
    server_spans: int = 0
    server_errors: int = 0

    def out(self) -> ServiceMapNode:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "spans": self.spans,
            "errors": self.errors,
            "server_spans": self.server_spans,
            "server_errors": self.server_errors,
            "error_rate": self.errors / self.spans if self.spans else 0.0,
        }


@dataclass
class _Edge:
    source: str
    target: str
    kind: EdgeKind
    calls: int = 0
    errors: int = 0
    duration_ns: int = 0

    def add(self, calls: int, errors: int, duration_ns: int) -> None:
        self.calls += calls
        self.errors += errors
        self.duration_ns += duration_ns

    def out(self, seconds: float) -> ServiceMapEdge:
        calls = self.calls
        return {
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "errors": self.errors,
            "calls": calls,
            "rate_per_second": calls / seconds,
            "error_rate": self.errors / calls if calls else 0.0,
            "avg_duration_ms": self.duration_ns / calls / 1e6 if calls else 0.0,
        }


def service_map(conn: sqlite3.Connection, w: Window, max_traces: int = 5000) -> ServiceMap:
    """Nodes (services, databases) and edges (calls between them) from the spans of the
    most recent ``max_traces`` traces that start in the window.

    An edge is a parent/child pair of spans in different services (CLIENT->SERVER,
    PRODUCER->CONSUMER, or any parent whose child runs elsewhere), or a CLIENT span with
    ``db.system.name`` (stable) or the older ``db.system`` (an edge to a node named after
    the database system).
    Errors count the child (callee) spans with status ERROR; for databases, the client span.
    """
    sampled = conn.execute(
        "SELECT count(*), min(start_ns), max(start_ns) FROM (SELECT start_ns FROM traces"
        " WHERE start_ns >= ? AND start_ns <= ? ORDER BY start_ns DESC LIMIT ?)",
        (w.since_ns, w.until_ns, max_traces),
    ).fetchone()
    traces, oldest, newest = sampled
    truncated = traces >= max_traces
    # Rates are per second of the time the sample covers (all of the window unless capped).
    covered = (newest - oldest) / SECOND if truncated and traces > 1 else w.seconds
    rows = conn.execute(
        f"""
        WITH t AS (SELECT trace_id FROM traces WHERE start_ns >= ? AND start_ns <= ?
                   ORDER BY start_ns DESC LIMIT ?)
        SELECT c.service_name,
               CASE WHEN c.kind IN ({SpanKind.SERVER:d}, {SpanKind.CONSUMER:d})
                         AND c.parent_span_id IS NOT NULL THEN
                   (SELECT p.service_name || char(31) || p.kind FROM spans p
                    WHERE p.trace_id = c.trace_id AND p.span_id = c.parent_span_id)
               END AS parent,
               CASE WHEN c.kind = {SpanKind.CLIENT:d} AND c.attributes IS NOT NULL THEN
                   coalesce(json_extract(c.attributes, '$."db.system.name"'),
                            json_extract(c.attributes, '$."db.system"'))
               END AS db,
               c.kind, count(*), sum(c.status_code = {StatusCode.ERROR:d}), sum(c.duration_ns)
        FROM t JOIN spans c ON c.trace_id = t.trace_id
        GROUP BY 1, 2, 3, 4
        """,
        (w.since_ns, w.until_ns, max_traces),
    ).fetchall()
    nodes: dict[str, _Node] = {}
    edges: dict[tuple[str, str], _Edge] = {}

    def node(name: str, kind: NodeKind) -> _Node:
        n = nodes.get(name)
        if n is None:
            n = nodes[name] = _Node(name, name, kind)
        return n

    def edge(source: str, target: str, kind: EdgeKind) -> _Edge:
        e = edges.get((source, target))
        if e is None:
            e = edges[(source, target)] = _Edge(source, target, kind)
        return e

    for service, parent, db, kind, calls, errors, duration in rows:
        n = node(service, "service")
        n.spans += calls
        n.errors += errors
        if kind in (SpanKind.SERVER, SpanKind.CONSUMER):
            n.server_spans += calls
            n.server_errors += errors
        if parent:
            parent_service, _, parent_kind = parent.rpartition("\x1f")
            if parent_service != service:
                node(parent_service, "service")
                messaging = kind == SpanKind.CONSUMER or parent_kind == str(int(SpanKind.PRODUCER))
                e = edge(parent_service, service, "messaging" if messaging else "http")
                e.add(calls, errors, duration)
        if db is not None:
            system = str(db)
            target = node(DB_NODE_PREFIX + system, "database")
            target.name = system
            target.spans += calls
            target.errors += errors
            edge(service, target.id, "database").add(calls, errors, duration)
    return {
        "since_unix_nano": w.since_ns,
        "until_unix_nano": w.until_ns,
        "traces_scanned": traces,
        "truncated": truncated,
        "seconds": covered,
        "nodes": [
            n.out() for n in sorted(nodes.values(), key=lambda n: (n.kind != "service", n.id))
        ],
        "edges": [
            e.out(covered) for e in sorted(edges.values(), key=lambda e: (e.source, e.target))
        ],
    }


# --------------------------------------------------------------------------- RED


def hist_quantile(hist: dict[int, int], total: int, q: float, lo: float, hi: float) -> float:
    """The q-quantile (ns) of a log-bucketed histogram, interpolated within the bucket
    geometrically and clamped to the exact min/max (so p100 is the true maximum)."""
    if total <= 0:
        return math.nan
    target = q * total
    seen = 0
    for bucket in sorted(hist):
        count = hist[bucket]
        if seen + count >= target:
            lower, upper = hist_bounds(bucket)
            frac = (target - seen) / count if count else 0.0
            value = lower * (upper / lower) ** frac if lower > 0 else upper * frac
            return min(max(value, lo), hi)
        seen += count
    return hi


@with_config(ConfigDict(extra="forbid"))
class RedSummary(TypedDict):
    """Rate, errors and duration over a window or a bucket; the ids link to traces."""

    count: int
    errors: int
    rate_per_second: float
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    max_ms: float | None
    slow_trace_id: str | None
    error_trace_id: str | None


@with_config(ConfigDict(extra="forbid"))
class RedPoint(RedSummary):
    start_unix_nano: int
    end_unix_nano: int


@with_config(ConfigDict(extra="forbid"))
class RedTotals(RedSummary):
    series: list[RedPoint]


@with_config(ConfigDict(extra="forbid"))
class RedGroup(RedTotals):
    name: str


@with_config(ConfigDict(extra="forbid"))
class RedRoute(RedTotals):
    route: str
    search: dict[str, str | list[str]] | None  # the trace search that finds its spans


@with_config(ConfigDict(extra="forbid"))
class Red(TypedDict):
    """``GET /api/red``: per service (``services``), or one service's total and its
    routes; these TypedDicts are also its OpenAPI models."""

    since_unix_nano: int
    until_unix_nano: int
    bucket_seconds: float
    services: NotRequired[list[RedGroup]]
    service: NotRequired[RedGroup]
    routes: NotRequired[list[RedRoute]]


# A ``red`` row's measurements: count, errors, sum_ns, min_ns, max_ns, hist (JSON),
# slow_trace_id, error_trace_id.
RedValues = tuple[int, int, int, int, int, str, bytes | None, bytes | None]


@dataclass
class _Agg:
    count: int = 0
    errors: int = 0
    sum_ns: int = 0
    min_ns: int = 2**63
    max_ns: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    slow_trace_id: bytes | None = None
    error_trace_id: bytes | None = None

    def add(self, row: RedValues) -> None:
        count, errors, sum_ns, min_ns, max_ns, hist, slow, error = row
        self.count += count
        self.errors += errors
        self.sum_ns += sum_ns
        self.min_ns = min(self.min_ns, min_ns)
        if max_ns >= self.max_ns:
            self.max_ns = max_ns
            self.slow_trace_id = slow
        if self.error_trace_id is None and error is not None:
            self.error_trace_id = error
        for bucket, n in json.loads(hist).items():
            b = int(bucket)
            self.hist[b] = self.hist.get(b, 0) + n

    def summary(self, seconds: float) -> RedSummary:
        def q(p: float) -> float | None:
            v = hist_quantile(self.hist, self.count, p, self.min_ns, self.max_ns)
            return None if math.isnan(v) else v / 1e6

        return {
            "count": self.count,
            "errors": self.errors,
            "rate_per_second": self.count / seconds if seconds > 0 else 0.0,
            "error_rate": self.errors / self.count if self.count else 0.0,
            "p50_ms": q(0.5),
            "p95_ms": q(0.95),
            "p99_ms": q(0.99),
            "avg_ms": self.sum_ns / self.count / 1e6 if self.count else None,
            "max_ms": self.max_ns / 1e6 if self.count else None,
            "slow_trace_id": self.slow_trace_id.hex() if self.slow_trace_id else None,
            "error_trace_id": self.error_trace_id.hex() if self.error_trace_id else None,
        }


def red(
    conn: sqlite3.Connection,
    w: Window,
    service: str | None = None,
    route: str | None = None,
    buckets: int = 60,
) -> Red:
    """Rate, errors and duration percentiles over time from SERVER and CONSUMER spans.

    Without ``service``: one group per service. With it: the service's total and one group
    per route (or only ``route``). Each group has totals over the window and a series of
    ``buckets`` time buckets (whole minutes), each with example trace ids.
    """
    first, last = w.since_ns // MINUTE_NS, w.until_ns // MINUTE_NS
    minutes_per_bucket = max(1, math.ceil((last - first + 1) / max(1, buckets)))
    n_buckets = math.ceil((last - first + 1) / minutes_per_bucket)
    conditions = ["minute >= ? AND minute <= ?"]
    params: list[int | str] = [first, last]
    if service is not None:
        conditions.append("service_name = ?")
        params.append(service)
    if route is not None:
        conditions.append("route = ?")
        params.append(route)
    rows = conn.execute(
        "SELECT service_name, route, minute, count, errors, sum_ns, min_ns, max_ns, hist,"
        f" slow_trace_id, error_trace_id, search FROM red WHERE {' AND '.join(conditions)}",
        params,
    ).fetchall()

    groups: dict[str, tuple[_Agg, dict[int, _Agg]]] = {}
    searches: dict[str, str | None] = {}
    service_total: tuple[_Agg, dict[int, _Agg]] = (_Agg(), {})

    def add(key: str, bucket: int, values: RedValues) -> None:
        total, series = groups.setdefault(key, (_Agg(), {}))
        total.add(values)
        series.setdefault(bucket, _Agg()).add(values)

    for svc, rt, minute, *values, search in rows:
        bucket = (minute - first) // minutes_per_bucket
        vals = tuple(values)
        if service is None:
            add(svc, bucket, vals)
        else:
            add(rt, bucket, vals)
            searches[rt] = search
            service_total[0].add(vals)
            service_total[1].setdefault(bucket, _Agg()).add(vals)

    bucket_ns = minutes_per_bucket * MINUTE_NS

    def bucket_seconds(i: int) -> float:
        """A bucket's length within the window (the current minute is only partly over)."""
        start = (first + i * minutes_per_bucket) * MINUTE_NS
        end = min(start + bucket_ns, w.until_ns)
        return max((end - max(start, w.since_ns)) / SECOND, 1.0)

    def render(total: _Agg, series: dict[int, _Agg]) -> RedTotals:
        points: list[RedPoint] = []
        for i in range(n_buckets):
            agg = series.get(i, _Agg())
            start = (first + i * minutes_per_bucket) * MINUTE_NS
            points.append(
                {"start_unix_nano": start, "end_unix_nano": start + bucket_ns,
                 **agg.summary(bucket_seconds(i))}
            )  # fmt: skip
        return {**total.summary(w.seconds), "series": points}

    out: Red = {
        "since_unix_nano": w.since_ns,
        "until_unix_nano": w.until_ns,
        "bucket_seconds": bucket_ns / SECOND,
    }
    if service is None:
        out["services"] = [
            {"name": key, **render(total, series)}
            for key, (total, series) in sorted(groups.items())
        ]
    else:
        out["service"] = {"name": service, **render(*service_total)}
        out["routes"] = [
            {**render(total, series), "route": key, "search": _search_of(searches.get(key))}
            for key, (total, series) in sorted(groups.items())
        ]
    return out


def _search_of(search: str | None) -> dict[str, str | list[str]] | None:
    found: dict[str, str | list[str]] | None = json.loads(search) if search else None
    return found


# --------------------------------------------------------------------------- metrics


@dataclass
class _Hist:
    """Merged histogram buckets as (lower, upper, count) ranges, plus count and sum."""

    ranges: list[tuple[float, float, float]] = field(default_factory=list)
    count: float = 0
    sum: float = 0

    def quantile(self, q: float) -> float | None:
        total = sum(c for _, _, c in self.ranges)
        if total <= 0:
            return None
        target = q * total
        seen = 0.0
        for lower, upper, count in sorted(self.ranges, key=lambda r: (r[1], r[0])):
            if count <= 0:
                continue
            if seen + count >= target:
                return lower + (upper - lower) * ((target - seen) / count)
            seen += count
        return self.ranges[-1][1]


def _explicit_ranges(
    counts: Sequence[float], bounds: Sequence[float], lo: float | None, hi: float | None
) -> list[tuple[float, float, float]]:
    """Bucket i covers (bounds[i-1], bounds[i]]; the open ends use min/max when known."""
    out = []
    for i, count in enumerate(counts):
        if not count:
            continue
        lower = (
            bounds[i - 1]
            if i > 0
            else (lo if lo is not None else min(0.0, bounds[0] if bounds else 0.0))
        )
        upper = (
            bounds[i]
            if i < len(bounds)
            else (hi if hi is not None else (bounds[-1] if bounds else 0.0))
        )
        out.append((lower, max(upper, lower), count))
    return out  # fmt: skip


def _pow2(exponent: float) -> float:
    """2.0 ** exponent, +inf past float's range (where ``**`` raises)."""
    return math.inf if exponent >= 1024 else 2.0**exponent


def _exponential_ranges(point: PointData) -> list[tuple[float, float, float]]:
    """Bucket index i covers (2^(i/2^scale), 2^((i+1)/2^scale)]. In floats throughout: an
    integer base (scale 0 or below) would make exact integers of thousands of digits."""
    scale = point.get("scale", 0)
    out: list[tuple[float, float, float]] = []
    for sign, buckets in ((1, point.get("positive")), (-1, point.get("negative"))):
        if not buckets:
            continue
        offset = buckets.get("offset", 0)
        for i, count in enumerate(buckets.get("bucket_counts", [])):
            if count:
                a = _pow2(math.ldexp(offset + i, -scale))
                b = _pow2(math.ldexp(offset + i + 1, -scale))
                out.append((a, b, count) if sign > 0 else (-b, -a, count))
    if point.get("zero_count"):
        out.append((0.0, 0.0, point["zero_count"]))
    return out


# How otlp.dumps writes the floats JSON cannot hold.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _numbers(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _point_data(text: str | None) -> PointData:
    """A point's ``data`` as otlp.py wrote it, with its NaN and infinities (stored as text)
    numbers again, so the arithmetic below never meets a string."""
    if not text:
        return {}
    data: PointData = json.loads(text)
    if "NaN" in text or "Infinity" in text:
        data = _numbers(data)
    return data


def _delta_counts(cur: Sequence[float], prev: Sequence[float] | None) -> list[float] | None:
    if prev is None or len(prev) != len(cur):
        return None
    delta = [c - p for c, p in zip(cur, prev, strict=True)]
    return None if any(d < 0 for d in delta) else delta


def _series_key(
    service_name: str, attributes: JSONObject, group_by: list[str]
) -> tuple[str, JSONObject]:
    labels: JSONObject = {"service.name": service_name}
    if group_by:
        for key in group_by:
            if key != "service.name":
                labels[key] = attributes.get(key)
        labels = {k: v for k, v in labels.items() if k in group_by}
    else:
        labels.update(attributes)
    return json.dumps(labels, sort_keys=True, default=str), labels


@dataclass
class _MetricMeta:
    id: int
    kind: str
    unit: str | None
    description: str | None
    monotonic: int | None
    temporality: int | None


@dataclass
class _Point:
    """One stored point as metric_series reads it."""

    service_name: str
    attrs_json: str | None
    start_ns: int | None
    time_ns: int
    value: Any  # a number for a sum or gauge (the kind says which points), NULL otherwise
    data: str | None
    exemplars: str | None


@dataclass
class _Bucket:
    """What one series accumulates in one time bucket, by the metric's type."""

    delta: float | None = None  # monotonic sum: the increase (None: nothing to diff yet)
    last: dict[str, float] = field(default_factory=dict)  # other sum: each raw series' last
    sum: float = 0  # gauge: sum and number of the values
    n: int = 0
    hist: _Hist | None = None  # histograms
    count: float = 0  # summary: the count and the latest quantiles
    quantiles: dict[str, float] = field(default_factory=dict)

    def add_delta(self, increase: float) -> None:
        self.delta = (self.delta or 0) + increase


@dataclass
class _Previous:
    """A raw series' previous point, to difference cumulative points."""

    start: int | None
    value: float = 0  # monotonic sum
    count: float = 0  # histograms
    sum: float = 0
    counts: Sequence[float] | None = None  # explicit-bucket histogram
    bounds: Sequence[float] | None = None


@dataclass
class _Series:
    labels: JSONObject
    buckets: dict[int, _Bucket] = field(default_factory=dict)


class _SeriesBuilder:
    """Accumulates a metric's points into per-series time buckets (see metric_series)."""

    def __init__(self, meta: _MetricMeta, w: Window, buckets: int, group_by: list[str]) -> None:
        self.meta = meta
        self.kind = meta.kind
        self.w = w
        self.n = max(1, buckets)
        span_ns = max(w.until_ns - w.since_ns, 1)
        self.bucket_ns = max(span_ns // self.n + (1 if span_ns % self.n else 0), 1)
        self.bucket_seconds = self.bucket_ns / SECOND
        self.group = group_by
        self.cumulative = meta.temporality == AggregationTemporality.CUMULATIVE
        self.dimensions: dict[str, dict[str, int]] = {"service.name": {}}
        self.exemplars: list[JSONObject] = []
        # Per raw series (service + full attributes): the previous point, for deltas.
        self.previous: dict[str, _Previous] = {}
        # Per output series: its labels and buckets.
        self.out: dict[str, _Series] = {}

    def _count_dimensions(self, service_name: str, attributes: JSONObject) -> None:
        services = self.dimensions["service.name"]
        services[service_name] = services.get(service_name, 0) + 1
        for k, v in attributes.items():
            values = self.dimensions.setdefault(k, {})
            if len(values) < 100:
                text = v if isinstance(v, str) else json.dumps(v)
                values[text] = values.get(text, 0) + 1

    def add(self, p: _Point) -> None:
        attributes: JSONObject = json.loads(p.attrs_json) if p.attrs_json else {}
        self._count_dimensions(p.service_name, attributes)
        raw_key = p.service_name + "\x1f" + (p.attrs_json or "")
        key, labels = _series_key(p.service_name, attributes, self.group)
        series = self.out.setdefault(key, _Series(labels))
        b = min((p.time_ns - self.w.since_ns) // self.bucket_ns, self.n - 1)
        acc = series.buckets.setdefault(b, _Bucket())
        fields = _point_data(p.data)
        kind = self.kind
        if kind in ("sum", "gauge") and p.value is None:
            pass  # NaN, which SQLite stores as NULL: a gap in the series, not a number
        elif kind == "sum" and self.meta.monotonic:
            self._add_counter(acc, raw_key, p)
        elif kind == "sum":
            acc.last[raw_key] = p.value
        elif kind == "gauge":
            acc.sum += p.value
            acc.n += 1
        elif kind in ("histogram", "exponential_histogram"):
            self._add_histogram(acc, raw_key, p.start_ns, fields)
        elif kind == "summary":
            acc.count += fields.get("count", 0)
            acc.quantiles = {
                str(q["quantile"]): q["value"] for q in fields.get("quantile_values", [])
            }
        for ex in json.loads(p.exemplars) if p.exemplars else []:
            if len(self.exemplars) < 500:
                self.exemplars.append({**ex, "series": labels})

    def _add_counter(self, acc: _Bucket, raw_key: str, p: _Point) -> None:
        """A monotonic sum: the increase in the bucket (cumulative points differenced)."""
        value = p.value
        prev = self.previous.get(raw_key)
        if not self.cumulative:
            acc.add_delta(value)
        elif prev is not None:
            restarted = prev.start != p.start_ns
            if not restarted and value >= prev.value:
                acc.add_delta(value - prev.value)
            else:
                acc.add_delta(value)  # reset: count from zero
        self.previous[raw_key] = _Previous(p.start_ns, value=value)

    def _add_histogram(
        self, acc: _Bucket, raw_key: str, start_ns: int | None, fields: PointData
    ) -> None:
        hist = acc.hist = acc.hist or _Hist()
        prev = self.previous.get(raw_key)
        restarted = prev is not None and prev.start != start_ns
        count, total = fields.get("count", 0), fields.get("sum") or 0
        if self.kind == "histogram":
            counts = fields.get("bucket_counts", [])
            bounds = fields.get("explicit_bounds", [])
            delta = counts if not self.cumulative else (
                None if prev is None or restarted or prev.bounds != bounds
                else _delta_counts(counts, prev.counts)
            )  # fmt: skip
            if delta is not None:
                hist.ranges += _explicit_ranges(delta, bounds, fields.get("min"), fields.get("max"))
            self.previous[raw_key] = _Previous(
                start_ns, count=count, sum=total, counts=counts, bounds=bounds
            )
        else:
            if not self.cumulative:
                hist.ranges += _exponential_ranges(fields)
            self.previous[raw_key] = _Previous(start_ns, count=count, sum=total)
        if not self.cumulative:
            hist.count += count
            hist.sum += total
        elif prev is not None and not restarted and count >= prev.count:
            hist.count += count - prev.count
            hist.sum += total - prev.sum
        # An exponential histogram with cumulative temporality: percentiles need the
        # per-bucket deltas, which scale changes make unreliable; the rate and mean stay.

    def _value(self, acc: _Bucket, p: JSONObject) -> None:
        kind = self.kind
        if kind == "sum" and self.meta.monotonic:
            if acc.delta is not None:
                p["rate_per_second"] = acc.delta / self.bucket_seconds
        elif kind == "sum":
            if acc.last:
                p["value"] = sum(acc.last.values())
        elif kind == "gauge":
            if acc.n:
                p["value"] = acc.sum / acc.n
        elif acc.hist is not None:
            h = acc.hist
            p["count"] = h.count
            p["rate_per_second"] = h.count / self.bucket_seconds
            p["avg"] = h.sum / h.count if h.count else None
            for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                p[label] = h.quantile(q)
        elif kind == "summary":
            p["count"] = acc.count
            p["quantiles"] = acc.quantiles

    def points(self, series: _Series) -> list[JSONObject]:
        points = []
        for b in range(self.n):
            acc = series.buckets.get(b)
            p: JSONObject = {"start_unix_nano": self.w.since_ns + b * self.bucket_ns}
            if acc is not None:
                self._value(acc, p)
            points.append(p)
        return points

    def series(self) -> list[JSONObject]:
        return [{"labels": s.labels, "points": self.points(s)} for _, s in sorted(self.out.items())]


def metric_series(
    conn: sqlite3.Connection,
    name: str,
    w: Window,
    *,
    service: str | None = None,
    attrs: list[AttrFilter] | None = None,
    group_by: list[str] | None = None,
    buckets: int = 60,
    max_points: int = 50_000,
) -> JSONObject | None:
    """A metric as time series of derived values, one per attribute set (or per
    ``group_by`` values), in ``buckets`` time buckets:

    - monotonic sum: rate per second (cumulative points are differenced; resets handled);
    - non-monotonic sum: the sum over series of each series' last value in the bucket;
    - gauge: the mean of the values in the bucket;
    - histogram / exponential histogram: count rate, average and p50/p95/p99 of the
      observations in the bucket (cumulative points are differenced);
    - summary: count rate and the reported quantiles.

    Also returns exemplars (linking to traces) and the dimensions seen, for filters.
    """
    row = conn.execute(
        "SELECT id, type, unit, description, is_monotonic, temporality FROM metrics WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    meta = _MetricMeta(*row)
    conditions = ["metric_id = ?", "time_ns >= ?", "time_ns <= ?"]
    params: list[SQLValue] = [meta.id, w.since_ns, w.until_ns]
    # One point before the window per series would make the first delta exact; the
    # first bucket simply has no rate instead (documented).
    if service:
        conditions.append("service_name = ?")
        params.append(service)
    conditions += _attr_sql(attrs or [], params)
    rows = conn.execute(
        "SELECT service_name, attributes, start_ns, time_ns, value, data, exemplars"
        f" FROM metric_points WHERE {' AND '.join(conditions)}"
        " ORDER BY time_ns DESC, rowid DESC LIMIT ?",
        [*params, max_points],
    ).fetchall()
    truncated = len(rows) >= max_points
    rows.reverse()
    builder = _SeriesBuilder(meta, w, buckets, [g for g in (group_by or []) if g])
    for r in rows:
        builder.add(_Point(*r))
    dimensions = builder.dimensions
    return {
        "name": name,
        "type": meta.kind,
        "unit": meta.unit or "",
        "description": meta.description or "",
        "is_monotonic": bool(meta.monotonic) if meta.monotonic is not None else None,
        "temporality": {1: "DELTA", 2: "CUMULATIVE"}.get(meta.temporality or 0),
        "since_unix_nano": w.since_ns,
        "until_unix_nano": w.until_ns,
        "bucket_seconds": builder.bucket_seconds,
        "points_read": len(rows),
        "truncated": truncated,
        "series": builder.series(),
        "exemplars": builder.exemplars,
        "dimensions": {
            k: sorted(v, key=lambda x: -v[x])[:50] for k, v in sorted(dimensions.items())
        },
    }


# --------------------------------------------------------------------------- suggestions

_SIGNAL_TABLES = {"spans": ("spans", "start_ns"), "logs": ("logs", "time_ns"),
                  "metrics": ("metric_points", "time_ns")}  # fmt: skip


def _sample(signal: str, service: str | None, size: int) -> tuple[str, list[SQLValue]]:
    """SQL for the most recent ``size`` rows of a signal (by rowid, or by service index)."""
    table, time_column = _SIGNAL_TABLES[signal]
    if not service:
        return (
            f"SELECT attributes FROM {table} WHERE rowid > (SELECT max(rowid) FROM {table}) - ?",
            [size],
        )
    order = "rowid DESC" if table == "metric_points" else f"service_name DESC, {time_column} DESC"
    return (
        f"SELECT attributes FROM {table} WHERE service_name = ? ORDER BY {order} LIMIT ?",
        [service, size],
    )


def attribute_keys(
    conn: sqlite3.Connection, signal: str, service: str | None = None, sample: int = 5000
) -> list[JSONObject]:
    """Attribute keys seen in the most recent rows, most frequent first, plus resource keys."""
    sql, params = _sample(signal, service, sample)
    keys = [
        {"key": key, "count": count, "source": "attribute"}
        for key, count in conn.execute(
            f"SELECT j.key, count(*) FROM ({sql}) s, json_each(s.attributes) j"
            " WHERE s.attributes IS NOT NULL GROUP BY j.key"
            " ORDER BY count(*) DESC, j.key LIMIT 300",
            params,
        )
    ]
    seen = {k["key"] for k in keys}
    resource_sql = "SELECT DISTINCT j.key FROM resources r, json_each(r.attributes) j"
    resource_params: list[SQLValue] = []
    if service:
        resource_sql += " WHERE r.service_name = ?"
        resource_params.append(service)
    for (key,) in conn.execute(resource_sql + " ORDER BY j.key LIMIT 300", resource_params):
        if key not in seen:
            keys.append({"key": key, "count": None, "source": "resource"})
    return keys


def attribute_values(
    conn: sqlite3.Connection,
    signal: str,
    key: str,
    service: str | None = None,
    sample: int = 20000,
    limit: int = 50,
) -> list[JSONObject]:
    """The most frequent values of one attribute key in the most recent rows."""
    path = f'$."{key}"'
    sql, params = _sample(signal, service, sample)
    values: dict[str, int] = {}
    for value, count in conn.execute(
        f"SELECT json_extract(s.attributes, ?) AS v, count(*) FROM ({sql}) s"
        " WHERE v IS NOT NULL GROUP BY v ORDER BY count(*) DESC LIMIT ?",
        [path, *params, limit],
    ):
        values[str(value)] = values.get(str(value), 0) + count
    resource_sql = "SELECT json_extract(attributes, ?) AS v FROM resources WHERE v IS NOT NULL"
    resource_params: list[SQLValue] = [path]
    if service:
        resource_sql += " AND service_name = ?"
        resource_params.append(service)
    for (value,) in conn.execute(resource_sql + " LIMIT ?", [*resource_params, limit]):
        values.setdefault(str(value), 0)
    return [{"value": v, "count": c} for v, c in sorted(values.items(), key=lambda x: -x[1])]
