"""The series the Collector makes in stack mode, made by the console in embedded mode.

In stack mode three kinds of Prometheus series do not come from a scrape of the services:
the Collector's spanmetrics connector counts every span (``traces_spanmetrics_*``), its
servicegraph connector pairs client and server spans into edges (``traces_service_graph_*``),
and the SDKs' OTel histograms ``http.server.request.duration`` and
``http.client.request.duration`` are pushed over OTLP into Prometheus' OTLP receiver
(``http_{server,client}_request_duration_seconds_*``). In embedded mode the
console is the OTLP receiver and stores every span and metric point, so it derives the same
series from its store, with the connectors' names, labels and semantics (the settings of
``deploy/otel-collector/config.yaml``), and hands them to the scraper as one more job
(:data:`JOB`): the dashboards' and rules' PromQL then reads them like any scraped series.

Incremental and cheap: each scrape round reads only the spans and metric points committed
since the last round (by rowid, aggregated in SQL), adds them to cumulative counters kept in
memory (so ``rate()`` works; a console restart is a counter reset, as a Collector restart is),
and writes a sample only when a value changed (the scraper's rule).

Differences from the stack, on purpose or by necessity:

- ``job`` is the service name (``service.name``), as the dashboards' ``job=~"$service"`` and
  ``prometheus.yml`` expect; in the stack the Collector drops ``service.namespace`` before
  Prometheus' OTLP receiver, which would otherwise make it ``service.namespace/service.name``.
  ``instance`` is ``service.instance.id``, as there.
- The service graph counts every client/server pair whose two spans both arrive; the
  Collector drops a pair whose halves arrive more than ``store.ttl`` (5 s) apart. A root
  SERVER/CONSUMER span is an edge from the virtual node ``user``, as the connector's
  ``virtualNode`` feature gate (on by default) does; client spans without a server span are
  not edges (the connector's virtual peer nodes need ``peer.service``/``db.name``/
  ``db.system``, which the services' stable-semconv spans do not carry).
- No ``otelcol_instance`` label (there is no Collector instance) and no exemplars on the
  span-derived histograms; the OTLP histogram keeps the exemplars its points carry.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from otel_lab.console.model import (
    AggregationTemporality,
    PointData,
    SpanKind,
    SQLValue,
    StatusCode,
)
from otel_lab.jsontypes import JSONObject
from otel_lab.telemetry.metrics import LATENCY_BUCKETS

JOB = "console-derived"  # the prom_scrapes / prom_series job of the derived series
INSTANCE = "console"

# The connectors' latency buckets (seconds) in deploy/otel-collector/config.yaml: the
# services' own (tests/deploy/test_collector.py checks the two agree).
BUCKETS = LATENCY_BUCKETS
# spanmetrics `dimensions` (attribute -> Prometheus label).
SPAN_DIMENSIONS = ("http.request.method", "http.route", "http.response.status_code")
# The SDK metrics pushed over OTLP that the dashboards read.
OTLP_METRICS = ("http.server.request.duration", "http.client.request.duration")
# A series of an OTLP metric with no point for this long is gone (Prometheus' lookback).
OTLP_LOOKBACK_NS = 300 * 1_000_000_000
MAX_SERIES = 20_000  # a cardinality guard: new label sets beyond it are not tracked
ROWS_PER_ROUND = 200_000  # spans read in one round at most; the rest wait for the next

INF = float("inf")
_KIND = {k: f"SPAN_KIND_{k.name}" for k in SpanKind}
_STATUS = {s: f"STATUS_CODE_{s.name}" for s in StatusCode}
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


@dataclass(frozen=True)
class Exemplar:
    """An OTLP exemplar of a histogram point, on the bucket its value falls in."""

    trace_id: str
    span_id: str | None
    value: float
    time_ns: int


SeriesKey = tuple[str, str]  # (name, labels as canonical JSON): scrape._series_key
# (series key, labels with job/instance, value, exemplar): the scraper's sample, keys made once
Sample = tuple[SeriesKey, dict[str, str], float, Exemplar | None]
_Slot = tuple[SeriesKey, dict[str, str]]


def prom_name(name: str, unit: str | None, suffix: str = "") -> str:
    """An OTel metric name as Prometheus' OTLP translation spells it
    (``http.server.request.duration`` + ``s`` -> ``http_server_request_duration_seconds``)."""
    out = "".join(c if c.isalnum() else "_" for c in name)
    unit_word = _UNITS.get(unit or "", "")
    if unit_word and not out.endswith("_" + unit_word):
        out += "_" + unit_word
    return out + suffix


def label_name(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


def le(bound: float) -> str:
    """A bucket bound the way Prometheus' translator formats it (``0.005``, ``5``, ``+Inf``)."""
    if bound == float("inf"):
        return "+Inf"
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


@dataclass
class _Histogram:
    """A cumulative histogram over :data:`BUCKETS` (per-bucket counts, not cumulative)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def add(self, total_ns: int, buckets: tuple[int, ...] | list[int]) -> None:
        """Observations aggregated in SQL: their summed duration and per-bucket counts."""
        self.total += total_ns / 1e9
        self.buckets = [a + b for a, b in zip(self.buckets, buckets, strict=True)]

    def samples(self, slots: list[_Slot]) -> list[Sample]:
        """``slots``: the series of the buckets, then _sum and _count (``Derived._histogram``)."""
        out: list[Sample] = []
        running = 0
        for slot, count in zip(slots, self.buckets, strict=False):
            running += count
            out.append((*slot, float(running), None))
        out.append((*slots[-2], self.total, None))
        out.append((*slots[-1], float(running), None))
        return out


def _bucket_sql(column: str) -> str:
    """SQL aggregates counting ``column`` (ns) per bucket: le(b0), (b0, b1], ..., (b_last, inf)."""
    edges = [int(b * 1e9) for b in BUCKETS]
    parts = [f"sum({column} <= {edges[0]})"]
    parts += [f"sum({column} > {lo} AND {column} <= {hi})" for lo, hi in pairwise(edges)]
    parts.append(f"sum({column} > {edges[-1]})")
    return ", ".join(parts)


_SPANMETRICS_SQL = f"""
SELECT service_name, resource_id, name, kind, status_code,
       json_extract(attributes, '$."http.request.method"'),
       json_extract(attributes, '$."http.route"'),
       json_extract(attributes, '$."http.response.status_code"'),
       count(*), sum(duration_ns), {_bucket_sql("duration_ns")}
FROM spans WHERE rowid > ? AND rowid <= ?
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""
_EDGE = (SpanKind.CLIENT, SpanKind.PRODUCER)
_SERVE = (SpanKind.SERVER, SpanKind.CONSUMER)
_ERR = int(StatusCode.ERROR)
# A pair is counted in the round its later span arrives: new server spans with their client
# span (already stored or new), then new client spans with a server span stored before; and a
# root server span is a pair with the virtual client "user". Aggregated per edge in SQL.
_PAIRS_SQL = f"""
WITH pairs (client, server, c_kind, s_kind, failed, c_ns, s_ns) AS (
SELECT c.service_name, s.service_name, c.kind, s.kind,
       c.status_code = {_ERR} OR s.status_code = {_ERR}, c.duration_ns, s.duration_ns
FROM spans s JOIN spans c ON c.trace_id = s.trace_id AND c.span_id = s.parent_span_id
WHERE s.rowid > :last AND s.rowid <= :cur AND s.kind IN ({_SERVE[0]:d}, {_SERVE[1]:d})
  AND c.kind IN ({_EDGE[0]:d}, {_EDGE[1]:d}) AND c.rowid <= :cur
UNION ALL
SELECT c.service_name, s.service_name, c.kind, s.kind,
       c.status_code = {_ERR} OR s.status_code = {_ERR}, c.duration_ns, s.duration_ns
FROM spans c JOIN spans s ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id
WHERE c.rowid > :last AND c.rowid <= :cur AND c.kind IN ({_EDGE[0]:d}, {_EDGE[1]:d})
  AND s.kind IN ({_SERVE[0]:d}, {_SERVE[1]:d}) AND s.rowid <= :last
UNION ALL
SELECT 'user', s.service_name, NULL, s.kind, s.status_code = {_ERR}, 0, s.duration_ns
FROM spans s
WHERE s.rowid > :last AND s.rowid <= :cur AND s.kind IN ({_SERVE[0]:d}, {_SERVE[1]:d})
  AND s.parent_span_id IS NULL)
SELECT client, server,
       CASE WHEN c_kind IS NULL THEN 'virtual_node'
            WHEN c_kind = {SpanKind.PRODUCER:d} OR s_kind = {SpanKind.CONSUMER:d}
            THEN 'messaging_system' ELSE '' END,
       failed, count(*), sum(s_ns), sum(c_ns), {_bucket_sql("s_ns")}, {_bucket_sql("c_ns")}
FROM pairs GROUP BY 1, 2, 3, 4
"""


@dataclass
class _Edge:
    """One series set of the connector: client, server, connection type and failed or not."""

    total_slot: _Slot  # traces_service_graph_request_total
    # traces_service_graph_request_failed_total, on a failed edge only: the connector keys
    # its series by `failed` too, so every request of a failed edge failed (its failed total
    # is its total) and an edge that never failed has no failed_total series (not a 0).
    failed_slot: _Slot | None
    server_slots: list[_Slot]  # the histograms' buckets, _sum and _count
    client_slots: list[_Slot]
    total: int = 0
    server: _Histogram = field(default_factory=_Histogram)
    client: _Histogram = field(default_factory=_Histogram)


@dataclass
class _Latest:
    """The last point of one OTLP series (cumulative values, or running sums of deltas)."""

    time_ns: int
    samples: list[Sample]
    slots: list[_Slot]
    counts: list[float] = field(default_factory=list)
    total: float = 0.0


class Derived:
    """Keeps the derived series; :meth:`collect` is called once per scrape round."""

    def __init__(
        self,
        open_reader: Callable[[], sqlite3.Connection],
        series_key: Callable[[str, dict[str, str]], SeriesKey],
    ) -> None:
        self._open_reader = open_reader
        self._series_key = series_key
        self._conn: sqlite3.Connection | None = None
        self.reset(from_start=False)

    def reset(self, from_start: bool = True) -> None:
        """Forget every counter; count spans from the first stored one (after a clear) or
        from those arriving next (at start-up: what a previous run counted is not recounted)."""
        self._span_rowid: int | None = 0 if from_start else None
        self._point_rowid: int | None = 0 if from_start else None
        self._calls: dict[tuple[SQLValue, ...], tuple[list[_Slot], int, _Histogram]] = {}
        self._edges: dict[tuple[str, str, str, bool], _Edge] = {}
        self._otlp: dict[tuple[str, str], _Latest] = {}
        self._resources: dict[int, JSONObject] = {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def collect(self, now_ns: int) -> list[Sample]:
        """Read what arrived since the last round; every derived series' current value."""
        if self._conn is None:
            self._conn = self._open_reader()
            # It reads each new page once: a small cache, not the API readers' 16 MB.
            self._conn.execute("PRAGMA cache_size=-2000")
        conn = self._conn
        conn.execute("BEGIN")
        try:
            self._read_spans(conn)
            self._read_points(conn)
        finally:
            conn.execute("COMMIT")
        return self._samples(now_ns)

    # ------------------------------------------------------------------ spans

    def _read_spans(self, conn: sqlite3.Connection) -> None:
        top = conn.execute("SELECT max(rowid) FROM spans").fetchone()[0] or 0
        last = self._span_rowid
        if last is None or top < last:  # start-up, or the table was emptied under us
            self._span_rowid = top if last is None else 0
            if last is None:
                return
            last = 0
        cur = min(top, last + ROWS_PER_ROUND)
        if cur <= last:
            return
        for row in conn.execute(_SPANMETRICS_SQL, (last, cur)):
            service, resource_id, name, kind, status, method, route, code = row[:8]
            count, total_ns, buckets = row[8], row[9], row[10:]
            key = (service, resource_id, name, kind, status, method, route, code)
            entry = self._calls.get(key)
            if entry is None:
                if len(self._calls) >= MAX_SERIES:
                    continue
                labels = {
                    "job": service,
                    "instance": self._instance(conn, resource_id, service),
                    "service_name": service,
                    "span_name": name,
                    "span_kind": _KIND.get(kind, "SPAN_KIND_UNSPECIFIED"),
                    "status_code": _STATUS.get(status, "STATUS_CODE_UNSET"),
                }
                for attr, value in zip(SPAN_DIMENSIONS, (method, route, code), strict=True):
                    if value is not None:
                        labels[label_name(attr)] = str(value)
                calls_slot = self._slot("traces_spanmetrics_calls_total", labels)
                slots = [
                    calls_slot,
                    *self._histogram("traces_spanmetrics_duration_seconds", labels),
                ]
                entry = (slots, 0, _Histogram())
            slots, calls, hist = entry
            hist.add(total_ns, buckets)
            self._calls[key] = (slots, calls + count, hist)
        width = len(BUCKETS) + 1
        for row in conn.execute(_PAIRS_SQL, {"last": last, "cur": cur}):
            client, server, kind, failed, count, s_ns, c_ns = row[:7]
            key2 = (client, server, kind, bool(failed))
            edge = self._edges.get(key2)
            if edge is None:
                if len(self._edges) >= MAX_SERIES:
                    continue
                edge = self._edges[key2] = self._edge(*key2)
            edge.total += count
            edge.server.add(s_ns, row[7 : 7 + width])
            edge.client.add(c_ns, row[7 + width :])
        self._span_rowid = cur

    def _instance(self, conn: sqlite3.Connection, resource_id: int, service: str) -> str:
        attrs = self._resources.get(resource_id)
        if attrs is None:
            row = conn.execute(
                "SELECT attributes FROM resources WHERE id = ?", (resource_id,)
            ).fetchone()
            attrs = self._resources[resource_id] = json.loads(row[0]) if row and row[0] else {}
        return str(attrs.get("service.instance.id", service))

    # ------------------------------------------------------------------ OTLP metrics

    def _read_points(self, conn: sqlite3.Connection) -> None:
        top = conn.execute("SELECT max(rowid) FROM metric_points").fetchone()[0] or 0
        last = self._point_rowid
        if last is None or top < last:
            self._point_rowid = top if last is None else 0
            if last is None:
                return
            last = 0
        marks = ",".join("?" * len(OTLP_METRICS))
        metrics = {
            row[0]: row[1:]
            for row in conn.execute(
                f"SELECT id, name, type, unit, temporality FROM metrics WHERE name IN ({marks})",
                OTLP_METRICS,
            )
        }
        if metrics:
            ids = ",".join(str(int(i)) for i in metrics)
            for metric_id, service, attrs, time_ns, data, exemplars, resource_id in conn.execute(
                "SELECT metric_id, service_name, attributes, time_ns, data, exemplars, resource_id"
                f" FROM metric_points WHERE rowid > ? AND rowid <= ? AND metric_id IN ({ids})"
                " ORDER BY rowid",
                (last, top),
            ):
                name, kind, unit, temporality = metrics[metric_id]
                if kind != "histogram" or not data:
                    continue
                self._histogram_point(
                    conn, prom_name(name, unit), service, attrs, time_ns, json.loads(data),
                    _exemplars(exemplars), resource_id, temporality == AggregationTemporality.DELTA,
                )  # fmt: skip
        self._point_rowid = top

    def _histogram_point(
        self,
        conn: sqlite3.Connection,
        name: str,
        service: str,
        attrs: str | None,
        time_ns: int,
        data: PointData,
        exemplars: list[Exemplar],
        resource_id: int,
        delta: bool,
    ) -> None:
        instance = self._instance(conn, resource_id, service)
        key = (name, f"{service}\x1f{instance}\x1f{attrs or ''}")
        latest = self._otlp.get(key)
        if latest is None and len(self._otlp) >= MAX_SERIES:
            return
        counts = [float(c) for c in data.get("bucket_counts", [])]
        total = float(data.get("sum") or 0.0)
        if delta and latest is not None and len(latest.counts) == len(counts):
            counts = [a + b for a, b in zip(latest.counts, counts, strict=True)]
            total += latest.total
        bounds = [*data.get("explicit_bounds", []), float("inf")]
        slots = latest.slots if latest is not None else []
        if len(slots) != len(bounds) + 2:  # new, or its buckets changed
            labels = {label_name(k): str(v) for k, v in json.loads(attrs or "{}").items()}
            labels.update(job=service, instance=instance)
            slots = self._histogram(name, labels, bounds)
        # The last exemplar of each bucket (Prometheus keeps one per bucket and scrape too).
        on_bucket = {next(i for i, b in enumerate(bounds) if ex.value <= b): ex for ex in exemplars}
        samples: list[Sample] = []
        running = 0.0
        for i, (slot, count) in enumerate(zip(slots, counts, strict=False)):
            running += count
            samples.append((*slot, running, on_bucket.get(i)))
        samples.append((*slots[-2], total, None))
        samples.append((*slots[-1], running, None))
        self._otlp[key] = _Latest(time_ns, samples, slots, counts, total)

    # ------------------------------------------------------------------ output

    def _slot(self, name: str, labels: dict[str, str]) -> _Slot:
        """A series' key and labels, made once (a new label set), not every round."""
        return self._series_key(name, labels), labels

    def _histogram(
        self, name: str, labels: dict[str, str], bounds: Sequence[float] = (*BUCKETS, INF)
    ) -> list[_Slot]:
        buckets = [self._slot(name + "_bucket", {**labels, "le": le(b)}) for b in bounds]
        return [*buckets, self._slot(name + "_sum", labels), self._slot(name + "_count", labels)]

    def _edge(self, client: str, server: str, kind: str, failed: bool) -> _Edge:
        # No job: the connector's metrics have an empty resource.
        labels = {"client": client, "server": server, "connection_type": kind,
                  "failed": "true" if failed else "false"}  # fmt: skip
        return _Edge(
            self._slot("traces_service_graph_request_total", labels),
            self._slot("traces_service_graph_request_failed_total", labels) if failed else None,
            self._histogram("traces_service_graph_request_server_seconds", labels),
            self._histogram("traces_service_graph_request_client_seconds", labels),
        )

    def _samples(self, now_ns: int) -> list[Sample]:
        out: list[Sample] = []
        for slots, calls, hist in self._calls.values():
            out.append((*slots[0], float(calls), None))
            out += hist.samples(slots[1:])
        for edge in self._edges.values():
            out.append((*edge.total_slot, float(edge.total), None))
            if edge.failed_slot is not None:
                out.append((*edge.failed_slot, float(edge.total), None))
            out += edge.server.samples(edge.server_slots)
            out += edge.client.samples(edge.client_slots)
        for key, latest in list(self._otlp.items()):
            if now_ns - latest.time_ns > OTLP_LOOKBACK_NS:
                del self._otlp[key]
                continue
            out += latest.samples
        return out


def _exemplars(text: str | None) -> list[Exemplar]:
    """The stored exemplars of a point that name a trace (otlp._exemplars_json)."""
    out = []
    for ex in json.loads(text) if text else []:
        if ex.get("trace_id") and isinstance(ex.get("value"), int | float):
            out.append(
                Exemplar(ex["trace_id"], ex.get("span_id"), float(ex["value"]),
                         int(ex.get("time_unix_nano") or 0))
            )  # fmt: skip
    return out
