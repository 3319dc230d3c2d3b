"""The Grafana dashboards of ``deploy/grafana/dashboards`` as console pages.

One definition: the console reads the JSON that ``deploy/grafana/build_dashboards.py``
generates for Grafana (same uid, titles, queries) and fills each panel from the running
system: Prometheus queries through :mod:`otel_lab.console.promql` over the scraped series,
Tempo (TraceQL) panels from the console's own traces, Loki panels from its logs, the node
graph from its service map. Every metric panel carries ``links``: the exemplars (trace ids)
of the series behind it in the time range, slowest first.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic reads it on Python < 3.12

from otel_lab.console import analytics, promql, queries
from otel_lab.console.analytics import ServiceMap
from otel_lab.console.queries import TraceSummary
from otel_lab.console.scrape import StoredExemplar
from otel_lab.jsontypes import JSONObject, JSONValue

DEFAULT_SCRAPE_SECONDS = 10.0
MAX_POINTS = 120
ALL = ".+"  # the `service` variable's "All" value (allValue in build_dashboards.py)
INSTANT_PANELS = ("stat", "table", "gauge", "bargauge")  # one value per series, at the end

# Series prefix -> where it comes from. No Prometheus that only scrapes the services has these:
# in stack mode the Collector makes them (its spanmetrics and servicegraph connectors, and the
# SDKs' OTLP metrics pushed into Prometheus' OTLP receiver); in embedded mode the console makes
# them the same way from the spans and metric points it stores (console.derived). tests/deploy
# uses the table to tell these panels from those a scrape-only Prometheus must fill.
DERIVED_SERIES: dict[str, str] = {
    "traces_spanmetrics_": "derived from spans by the Collector's spanmetrics connector "
    "(in embedded mode by the console)",
    "traces_service_graph_": "derived from spans by the Collector's servicegraph connector "
    "(in embedded mode by the console)",
    "http_server_request_duration_seconds": (
        "the SDKs' OTel metric, pushed over OTLP through the Collector into Prometheus' "
        "OTLP receiver (in embedded mode the console translates the points it receives)"
    ),
    "http_client_request_duration_seconds": (
        "the SDKs' OTel metric, pushed over OTLP through the Collector into Prometheus' "
        "OTLP receiver (in embedded mode the console translates the points it receives)"
    ),
}
# Series prefix -> why embedded mode cannot have it; the console shows the reason on a panel
# that stays empty. None left: the console derives what the Collector makes (above).
COLLECTOR_ONLY_SERIES: dict[str, str] = {}
# Series that exist only in particular states of the system.
CONDITIONAL_SERIES: dict[str, str] = {
    "ALERTS": "exists only while an alert fires, and needs deploy/prometheus/rules loaded",
}


def _needs(expr: str, table: dict[str, str]) -> tuple[str, str] | None:
    for prefix, reason in table.items():
        if re.search(rf"(?<![A-Za-z0-9_:]){re.escape(prefix)}", expr):
            return prefix, reason
    return None


def dependency_reason(expr: str) -> str | None:
    """Why this query cannot return data from a Prometheus scraping the services, or None."""
    found = (
        _needs(expr, COLLECTOR_ONLY_SERIES)
        or _needs(expr, DERIVED_SERIES)
        or _needs(expr, CONDITIONAL_SERIES)
    )
    return found[1] if found else None


def why_empty(exprs: list[str]) -> str | None:
    """What an empty panel says when its series cannot be there, rather than 'no data in
    this time range'."""
    for expr in exprs:
        if found := _needs(expr, COLLECTOR_ONLY_SERIES):
            return f"No data in embedded mode: {found[0]}… is {found[1]}."
        if found := _needs(expr, CONDITIONAL_SERIES):
            return f"No data now: {found[0]} {found[1]}."
    return None


# ---------------------------------------------------------------- the Grafana JSON read here


class Datasource(TypedDict, total=False):
    type: str
    uid: str


class Target(TypedDict, total=False):
    """One query of a panel: PromQL (``expr``), TraceQL (``query``) or LogQL (``expr``)."""

    expr: str
    refId: str
    legendFormat: str
    datasource: Datasource
    queryType: str
    query: str


class FieldDefaults(TypedDict, total=False):
    unit: str


class FieldConfig(TypedDict, total=False):
    defaults: FieldDefaults


class Panel(TypedDict, total=False):
    type: str
    title: str
    description: str
    datasource: Datasource
    targets: list[Target]
    panels: list[Panel]  # a row's panels
    gridPos: dict[str, int]
    fieldConfig: FieldConfig


TimeRange = TypedDict("TimeRange", {"from": str, "to": str}, total=False)


class GrafanaDashboard(TypedDict, total=False):
    uid: str
    title: str
    time: TimeRange
    panels: list[Panel]


# Checks a file's JSON against the part read here (the keys above; others are dropped).
_DASHBOARD = TypeAdapter(GrafanaDashboard)


# ---------------------------------------------------------------- what a page is filled with


class SeriesOut(TypedDict, total=False):
    ref: str | None
    labels: dict[str, str]
    name: str
    value: float | str | None  # instant panels
    points: list[list[float | str | None]]  # range panels: [unix seconds, value]


class Link(TypedDict, total=False):
    """A trace behind a panel: an exemplar, or the slowest or a failed trace of a job."""

    trace_id: str | None
    value: float
    time: float
    series: dict[str, str]
    kind: str


class PanelOut(TypedDict, total=False):
    title: str
    type: str | None
    description: str | None
    unit: str | None
    gridPos: dict[str, int] | None
    empty: bool
    error: str
    note: str
    queries: list[str]  # metric panels
    series: list[SeriesOut]
    value: float | str | None
    table: JSONObject
    links: list[Link]
    query: str  # trace and log panels
    traces: list[TraceSummary]
    logs: list[JSONObject]
    graph: ServiceMap  # the node graph


class RenderedDashboard(TypedDict):
    uid: str
    title: str
    range_seconds: float
    end: float
    step_seconds: float
    variables: dict[str, str]
    panels: list[PanelOut]


@dataclass
class Dashboard:
    uid: str
    title: str
    path: Path
    doc: GrafanaDashboard


# path -> ((mtime ns, size), the file as loaded then): every request lists the dashboards, and
# parsing and validating the JSON again each time cost about 1 ms. An edited file has a new
# modification time (or size) and is read again; one gone is dropped at the next load.
_LOADED: dict[Path, tuple[tuple[int, int], Dashboard]] = {}
_LOADED_LOCK = threading.Lock()  # requests run on the thread pool
# A file modified this recently is not cached: the kernel stamps mtimes from a clock that
# ticks every few ms, so a same-size rewrite within the tick would keep the old key (git's
# "racily clean" entries).
_SETTLE_NS = 1_000_000_000


def _load_file(path: Path) -> Dashboard:
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _LOADED.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    doc = _DASHBOARD.validate_json(path.read_bytes())
    board = Dashboard(doc["uid"], doc.get("title", doc["uid"]), path, doc)
    if time.time_ns() - stat.st_mtime_ns > _SETTLE_NS:
        _LOADED[path] = (key, board)
    return board


def load(directory: Path) -> dict[str, Dashboard]:
    """The dashboards of ``directory`` by uid; a file unchanged since the last call is not
    read again (the same :class:`Dashboard` object is returned)."""
    paths = sorted(directory.glob("*.json"))
    boards: dict[str, Dashboard] = {}
    with _LOADED_LOCK:
        for gone in [p for p in _LOADED if p.parent == directory and p not in paths]:
            del _LOADED[gone]
        for path in paths:
            board = _load_file(path)
            boards[board.uid] = board
    return boards


def panels_of(doc: GrafanaDashboard) -> list[Panel]:
    out: list[Panel] = []

    def walk(panels: list[Panel]) -> None:
        for p in panels:
            out.append(p)
            walk(p.get("panels", []))

    walk(doc.get("panels", []))
    return out


def rate_interval(step_s: float, scrape_s: float) -> float:
    """Grafana's ``$__rate_interval``: max(``$__interval`` + scrape interval, 4 x scrape)."""
    return max(step_s + scrape_s, 4 * scrape_s)


def _seconds(text: str) -> int:
    return int(promql.parse_duration_ms(text) / 1000)


def expand(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


def _legend(fmt: str | None, labels: dict[str, str]) -> str:
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt)
    shown = {k: v for k, v in labels.items() if k != promql.NAME}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"


def _num(v: float) -> float | str | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


class Renderer:
    """Fills a dashboard's panels for one time range."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        source: promql.Source,
        *,
        end_s: float | None = None,
        range_s: float | None = None,
        service: str = ALL,
        scrape_s: float = DEFAULT_SCRAPE_SECONDS,
    ) -> None:
        self.conn = conn
        self.source = source
        self.end_s = end_s if end_s is not None else time.time()
        self.range_s = range_s
        self.service = service
        self.scrape_s = scrape_s

    def render(self, board: Dashboard) -> RenderedDashboard:
        range_s = self.range_s or _seconds(board.doc.get("time", {}).get("from", "now-1h")[4:])
        step = max(self.scrape_s, math.ceil(range_s / MAX_POINTS))
        variables = {
            "$__rate_interval": f"{int(rate_interval(step, self.scrape_s))}s",
            "$__interval": f"{int(step)}s",
            "$__range": f"{int(range_s)}s",
            "$service": self.service,
        }
        ctx = _Ctx(self.end_s, range_s, step, variables)
        self._read_once = _ReadOnce(self.source, self._windows(board, ctx))
        self._exemplars_of: dict[_Key, list[StoredExemplar]] = {}
        self._shared_steps: dict[promql.StepKey, dict[int, promql.Vector]] = {}
        self._job_links_of: dict[str, list[Link]] = {}
        panels: list[PanelOut] = []
        for panel in panels_of(board.doc):
            if panel.get("type") == "row":
                panels.append({"title": panel.get("title", ""), "type": "row", "empty": False})
                continue
            body: PanelOut
            try:
                body = self._panel(panel, ctx)
            except (promql.PromQLError, queries.QueryError) as exc:
                body = {"error": str(exc), "empty": True}
            panels.append(
                {
                    "title": panel.get("title", ""),
                    "type": panel.get("type"),
                    "description": panel.get("description"),
                    "unit": panel.get("fieldConfig", {}).get("defaults", {}).get("unit"),
                    "gridPos": panel.get("gridPos"),
                    **body,
                }
            )
        return {
            "uid": board.uid,
            "title": board.title,
            "range_seconds": range_s,
            "end": self.end_s,
            "step_seconds": step,
            "variables": variables,
            "panels": panels,
        }

    def _windows(self, board: Dashboard, ctx: _Ctx) -> dict[_Key, tuple[int, int]]:
        """For each selector of the dashboard's metric panels, the time span (ms) all its
        panels together need: the union of their range and instant evaluations."""
        end_ms = int(ctx.end_s * 1000)
        start_ms = end_ms - int(ctx.range_s * 1000)
        windows: dict[_Key, tuple[int, int]] = {}
        for panel in panels_of(board.doc):
            instant = panel.get("type") in INSTANT_PANELS
            for target in panel.get("targets", []):
                if "expr" not in target:
                    continue
                try:
                    tree = promql.parse(expand(target["expr"], ctx.variables))
                except promql.PromQLError:
                    continue  # the panel reports it
                for sel in promql.selectors(tree):
                    reach = (sel.range_ms or promql.LOOKBACK_MS) + sel.offset_ms
                    lo = (end_ms if instant else start_ms) - reach
                    hi = end_ms - sel.offset_ms
                    key = promql.matcher_key(sel.matchers)
                    old = windows.get(key, (lo, hi))
                    windows[key] = (min(old[0], lo), max(old[1], hi))
        return windows

    # ------------------------------------------------------------------ one panel

    def _panel(self, panel: Panel, ctx: _Ctx) -> PanelOut:
        targets = panel.get("targets", [])
        kinds = {
            (t.get("datasource") or panel.get("datasource") or Datasource()).get("type")
            for t in targets
        }
        if kinds == {"prometheus"}:
            return self._prometheus(panel, targets, ctx)
        if kinds == {"tempo"}:
            target = targets[0]
            if target.get("queryType") == "serviceMap":
                return self._service_map(ctx)
            return self._traces(target.get("query", ""), ctx, panel.get("title", ""))
        if kinds == {"loki"}:
            return self._logs(targets[0].get("expr", ""), ctx)
        return {
            "empty": True,
            "error": f"no data source the console knows: {sorted(map(str, kinds))}",
        }

    def _prometheus(self, panel: Panel, targets: list[Target], ctx: _Ctx) -> PanelOut:
        kind = panel.get("type")
        end_ms = int(ctx.end_s * 1000)
        start_ms = end_ms - int(ctx.range_s * 1000)
        instant = kind in INSTANT_PANELS
        series_out: list[SeriesOut] = []
        exprs = []
        for target in targets:
            expr = expand(target["expr"], ctx.variables)
            exprs.append(expr)
            tree = promql.parse(expr)
            evaluator = promql.Evaluator(self._read_once, shared=self._shared_steps)
            if instant:
                value = evaluator.instant(tree, end_ms)
                vector = [((), value)] if isinstance(value, float) else value
                for labels, v in vector:
                    d = dict(labels)
                    series_out.append(
                        {
                            "ref": target.get("refId"),
                            "labels": d,
                            "name": _legend(target.get("legendFormat"), d),
                            "value": _num(v),
                        }
                    )
            else:
                result = evaluator.range(tree, start_ms, end_ms, int(ctx.step * 1000))
                for labels, points in sorted(result.items()):
                    d = dict(labels)
                    series_out.append(
                        {
                            "ref": target.get("refId"),
                            "labels": d,
                            "name": _legend(target.get("legendFormat"), d),
                            "points": [[t / 1000, _num(v)] for t, v in points],
                        }
                    )
        empty = not any(
            (s.get("value") is not None) if instant else any(v is not None for _, v in s["points"])
            for s in series_out
        )
        out: PanelOut = {"queries": exprs, "series": series_out, "empty": empty}
        if empty and (note := why_empty(exprs)):
            out["note"] = note
        if instant and kind == "stat":
            values = [s["value"] for s in series_out if isinstance(s["value"], float)]
            out["value"] = values[0] if len(values) == 1 else None
        if kind == "table":
            out["table"] = _table(series_out, targets)
        out["links"] = self._exemplar_links(exprs, start_ms, end_ms) or self._job_links(
            series_out, start_ms, end_ms
        )
        return out

    def _exemplar_links(self, exprs: list[str], start_ms: int, end_ms: int) -> list[Link]:
        from otel_lab.console.scrape import exemplars

        found: dict[str, StoredExemplar] = {}
        for expr in exprs:
            for sel in promql.selectors(promql.parse(expr)):
                matchers = list(sel.matchers)
                for m in matchers:
                    if (
                        m.name == promql.NAME
                        and m.op == "="
                        and m.value.endswith(("_count", "_sum"))
                    ):
                        base = m.value.rsplit("_", 1)[0]
                        matchers = [x for x in matchers if x is not m]
                        matchers.append(promql.Matcher(promql.NAME, "=", base + "_bucket"))
                key = promql.matcher_key(matchers)
                if key not in self._exemplars_of:
                    self._exemplars_of[key] = exemplars(
                        self.conn, matchers, start_ms * 1_000_000, end_ms * 1_000_000
                    )
                for e in self._exemplars_of[key]:
                    if e["trace_id"] and e["trace_id"] not in found:
                        found[e["trace_id"]] = e
        ranked = sorted(found.values(), key=lambda e: e["value"] or 0, reverse=True)
        return [
            {
                "trace_id": e["trace_id"],
                "value": e["value"],
                "time": e["time_unix_nano"] / 1e9,
                "series": e["series"],
            }
            for e in ranked[:10]
        ]

    def _job_links(self, series: list[SeriesOut], start_ms: int, end_ms: int) -> list[Link]:
        """Without exemplars (counters, gauges): the slowest and a failed trace of each
        service the panel shows, in its time range."""
        links: list[Link] = []
        # The service: its job, or in span metrics service_name, in the service graph server.
        names = ("job", "service_name", "server")
        found = (next((s["labels"][k] for k in names if s["labels"].get(k)), "") for s in series)
        jobs = sorted({job for job in found if job})
        for job in jobs[:5]:
            if job not in self._job_links_of:  # panels of one dashboard share their jobs
                self._job_links_of[job] = self._find_job_links(job, start_ms, end_ms)
            links += self._job_links_of[job]
        return links

    def _find_job_links(self, job: str, start_ms: int, end_ms: int) -> list[Link]:
        links: list[Link] = []
        for extra in ({"order": "duration"}, {"status": 2}):
            f = queries.TraceFilter(
                service=job, since_ns=start_ms * 1_000_000, until_ns=end_ms * 1_000_000,
                limit=1, **extra,
            )  # fmt: skip
            for t in queries.find_traces(self.conn, f):
                links.append(
                    {
                        "trace_id": t["trace_id"],
                        "value": t["duration_ms"] / 1000,
                        "time": t["start_time_unix_nano"] / 1e9,
                        "series": {"job": job},
                        "kind": "failed" if extra.get("status") else "slowest",
                    }
                )
        return links

    def _traces(self, traceql: str, ctx: _Ctx, title: str) -> PanelOut:
        f = traceql_filter(traceql)
        f.since_ns = int((ctx.end_s - ctx.range_s) * 1e9)
        f.until_ns = int(ctx.end_s * 1e9)
        f.limit = 20
        if "slow" in title.lower():
            f.order = "duration"
        traces = queries.find_traces(self.conn, f)
        return {"query": traceql, "traces": traces, "empty": not traces}

    def _logs(self, logql: str, ctx: _Ctx) -> PanelOut:
        m = re.search(r'service_name\s*=\s*"([^"]+)"', logql)
        f = queries.LogFilter(
            service=m[1] if m else None,
            since_ns=int((ctx.end_s - ctx.range_s) * 1e9),
            until_ns=int(ctx.end_s * 1e9),
            limit=50,
        )
        logs = queries.find_logs(self.conn, f)
        return {"query": logql, "logs": logs, "empty": not logs}

    def _service_map(self, ctx: _Ctx) -> PanelOut:
        w = analytics.Window(int((ctx.end_s - ctx.range_s) * 1e9), int(ctx.end_s * 1e9))
        graph = analytics.service_map(self.conn, w, 5000)
        return {"graph": graph, "empty": not graph.get("edges")}


_Key = tuple[tuple[str, str, str], ...]


class _ReadOnce:
    """The dashboard's series, each selector read once per render.

    Panels share selectors (``requests_total{job=~"$service"}`` is in five of the overview's
    panels) and a range query needs a longer span than an instant one; so the store is read
    once per selector for the union of what its panels need (``Renderer._windows``), and
    each evaluation gets its own slice, as if it had read it itself."""

    def __init__(self, source: promql.Source, windows: dict[_Key, tuple[int, int]]) -> None:
        self.source = source
        self.windows = windows
        self._read: dict[_Key, promql.MemorySource] = {}

    def select(
        self, matchers: Sequence[promql.Matcher], start_ms: int, end_ms: int
    ) -> list[promql.Series]:
        key = promql.matcher_key(matchers)
        window = self.windows.get(key)
        if window is None or window[0] > start_ms or window[1] < end_ms:
            return self.source.select(matchers, start_ms, end_ms)
        read = self._read.get(key)
        if read is None:
            read = self._read[key] = promql.MemorySource(self.source.select(matchers, *window))
        return [s for s in read.select((), start_ms, end_ms) if s.ts or s.stale]


@dataclass
class _Ctx:
    end_s: float
    range_s: float
    step: float
    variables: dict[str, str]


def _table(series: list[SeriesOut], targets: list[Target]) -> JSONObject:
    """One row per label set, one value column per query (Grafana's 'merge' transform)."""
    label_names = sorted({k for s in series for k in s["labels"] if k != promql.NAME})
    refs = [t.get("refId") for t in targets]
    rows: dict[tuple[str, ...], dict[str, JSONValue]] = {}
    for s in series:
        key = tuple(s["labels"].get(k, "") for k in label_names)
        row = rows.setdefault(key, dict(zip(label_names, key, strict=True)))
        row[f"Value #{s['ref']}" if len(refs) > 1 else "Value"] = s["value"]
    columns = label_names + ([f"Value #{r}" for r in refs] if len(refs) > 1 else ["Value"])
    return {"columns": columns, "rows": [[r.get(c) for c in columns] for r in rows.values()]}


_TRACEQL_COND = re.compile(
    r"(resource\.service\.name|span\.[\w.]+|status|duration|name)\s*(=|>|<|>=|<=)\s*"
    r'("(?:[^"\\]|\\.)*"|[\w.]+)'
)


def traceql_filter(traceql: str) -> queries.TraceFilter:
    """The ``{ a = "x" && duration > 100ms }`` TraceQL of the dashboards as a trace filter."""
    body = traceql.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise queries.QueryError(f"TraceQL {traceql!r}: only {{ ... }} span sets are supported")
    f = queries.TraceFilter()
    for part in [p.strip() for p in body[1:-1].split("&&") if p.strip()]:
        m = _TRACEQL_COND.fullmatch(part)
        if not m:
            raise queries.QueryError(f"TraceQL condition {part!r} is not supported")
        field_, op, raw = m.groups()
        value = raw[1:-1] if raw.startswith('"') else raw
        if field_ == "resource.service.name":
            f.service = value
        elif field_ == "status":
            f.status = queries.parse_status(value)
        elif field_ == "duration":
            ns = (
                promql.parse_duration_ms(value) * 1_000_000
                if not value.endswith("ms")
                else (int(value[:-2]) * 1_000_000)
            )
            if op.startswith(">"):
                f.min_duration_ns = ns
            else:
                f.max_duration_ns = ns
        elif field_ == "name":
            f.name = value
        else:
            f.attrs.append(queries.parse_attr(f"{field_.removeprefix('span.')}={value}"))
    return f
