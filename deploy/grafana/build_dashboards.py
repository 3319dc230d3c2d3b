"""Generate the Grafana dashboards of Otel Lab (deploy/grafana/dashboards/*.json).

    python deploy/grafana/build_dashboards.py          # write the JSON files and docs/dashboards.md
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a committed file is stale

Plain Python and the standard library, so anyone can read and change a panel. The JSON is
committed (Grafana provisions it from deploy/grafana/dashboards); tests/deploy checks that it is
up to date, that it round-trips through Grafana's schema (grafana-foundation-sdk), and lists
every Prometheus query so it can be executed against a real Prometheus.

Metric names are those the services expose on /metrics (prometheus_client), plus the series the
Collector derives from spans (traces_spanmetrics_*, traces_service_graph_*) and the SDKs' stable
OTel metric http.server.request.duration (pushed over OTLP as http_server_request_duration_seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"

PROM = {"type": "prometheus", "uid": "prometheus"}
TEMPO = {"type": "tempo", "uid": "tempo"}
LOKI = {"type": "loki", "uid": "loki"}

# Routes that are not part of the public API surface.
NOT_PUBLIC = '"/health|/ready|/metrics|/error-simulation.*"'  # error-simulation fails by design
PUBLIC = f'job="gateway",path!~{NOT_PUBLIC}'
RI = "$__rate_interval"

Panel = dict[str, Any]


# --------------------------------------------------------------------------- panel helpers
def prom(
    expr: str,
    legend: str = "",
    *,
    ref: str = "A",
    exemplar: bool = False,
    instant: bool = False,
    fmt: str | None = None,
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "exemplar": exemplar,
    }
    if fmt:
        target["format"] = fmt
    return target


def refs(*targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Give targets refIds A, B, C... in order."""
    out = []
    for i, t in enumerate(targets):
        t = dict(t)
        t["refId"] = chr(ord("A") + i)
        out.append(t)
    return out


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    min_: float | None = 0,
    max_: float | None = None,
    thresholds: list[tuple[float, str]] | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 15 if stack else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
        defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": refs(*targets),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (w, h),
    }


def _thresholds(steps: list[tuple[float, str]]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [
            {"color": color, "value": None if i == 0 else value}
            for i, (value, color) in enumerate(steps)
        ],
    }


def stat(
    title: str,
    description: str,
    target: dict[str, Any],
    *,
    unit: str = "short",
    w: int = 6,
    h: int = 4,
    thresholds: list[tuple[float, str]] | None = None,
    decimals: int | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": _thresholds(thresholds or [(0, "green")]),
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "targets": refs(target),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
        "_size": (w, h),
    }


def heatmap(
    title: str, description: str, target: dict[str, Any], *, w: int = 12, h: int = 8
) -> Panel:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "targets": refs(target),
        "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "tooltip": {"mode": "single", "yHistogram": True},
        },
        "_size": (w, h),
    }


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    transformations: list[dict[str, Any]] | None = None,
) -> Panel:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": refs(*targets),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"]},
        },
        "transformations": transformations or [],
        "_size": (w, h),
    }


def state_timeline(
    title: str, description: str, target: dict[str, Any], *, w: int = 24, h: int = 6
) -> Panel:
    mappings = [
        {
            "type": "value",
            "options": {
                "0": {"text": "closed", "color": "green", "index": 0},
                "1": {"text": "half-open", "color": "yellow", "index": 1},
                "2": {"text": "open", "color": "red", "index": 2},
            },
        }
    ]
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "targets": refs(target),
        "fieldConfig": {
            "defaults": {
                "mappings": mappings,
                "color": {"mode": "thresholds"},
                "thresholds": _thresholds([(0, "green")]),
            },
            "overrides": [],
        },
        "options": {
            "showValue": "auto",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        },
        "_size": (w, h),
    }


def service_map(title: str, description: str, *, w: int = 24, h: int = 12) -> Panel:
    """Tempo's service graph, drawn from the traces_service_graph_* series in Prometheus."""
    return {
        "type": "nodeGraph",
        "title": title,
        "description": description,
        "datasource": TEMPO,
        "targets": [
            {
                "refId": "A",
                "datasource": TEMPO,
                "queryType": "serviceMap",
                "serviceMapQuery": "",
                "query": "",
            }
        ],
        "options": {"nodes": {}, "edges": {}},
        "_size": (w, h),
    }


def traces(
    title: str, description: str, traceql: str, *, w: int = 12, h: int = 8, limit: int = 20
) -> Panel:
    """A table of traces from a TraceQL search (the chain's queries); a click opens the trace."""
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": TEMPO,
        "targets": [
            {
                "refId": "A",
                "datasource": TEMPO,
                "queryType": "traceql",
                "query": traceql,
                "limit": limit,
                "tableType": "traces",
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"]},
        },
        "_size": (w, h),
    }


def logs(title: str, description: str, logql: str, *, w: int = 24, h: int = 8) -> Panel:
    return {
        "type": "logs",
        "title": title,
        "description": description,
        "datasource": LOKI,
        "targets": [
            {
                "refId": "A",
                "datasource": LOKI,
                "editorMode": "code",
                "expr": logql,
                "queryType": "range",
            }
        ],
        "options": {
            "showTime": True,
            "wrapLogMessage": True,
            "prettifyLogMessage": False,
            "enableLogDetails": True,
            "dedupStrategy": "none",
            "sortOrder": "Descending",
        },
        "_size": (w, h),
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


# --------------------------------------------------------------------------- dashboard helpers
def job_variable(
    name: str = "service",
    label: str = "Service",
    *,
    include_all: bool = True,
    default: str = "$__all",
) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROM,
        "query": {"query": "label_values(requests_total, job)", "refId": "service"},
        "refresh": 2,
        "sort": 1,
        "multi": include_all,
        "includeAll": include_all,
        "allValue": ".+",
        "current": {"text": "All", "value": default} if include_all else {},
        "options": [],
        "hide": 0,
    }


def layout(panels: list[Panel]) -> list[Panel]:
    """Place panels left to right, wrapping at 24 columns; give every panel an id."""
    x = y = row_h = 0
    out = []
    for pid, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p = {"id": pid, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **p}
        out.append(p)
        x += w
        row_h = max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return out


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Panel],
    *,
    tags: list[str],
    variables: list[dict[str, Any]] | None = None,
    time_from: str = "now-30m",
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["otel-lab", *tags],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "Otel Lab dashboards",
                "type": "dashboards",
                "tags": ["otel-lab"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                    "builtIn": 1,
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                }
            ]
        },
        "templating": {"list": variables or []},
        "panels": layout(panels),
    }


# --------------------------------------------------------------------------- common queries
def quantile(q: float, metric: str, selector: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RI}])))"


def ratio_5xx(selector: str, by: str, window: str = RI) -> str:
    """Share of 5xx responses; 0 (not "no data") while there has been no 5xx at all."""
    total = f"sum by ({by}) (rate(requests_total{{{selector}}}[{window}]))"
    errors = f'sum by ({by}) (rate(requests_total{{{selector},status=~"5.."}}[{window}]))'
    return f"(\n  {errors}\n  or\n  {total} * 0\n)\n/\n{total}"


def cache_hit_ratio(selector: str, by: str) -> str:
    """Hit share of cache lookups; a counter without a series yet (no hit so far) counts as 0."""
    hits = f"sum by ({by}) (rate(cache_hits_total{{{selector}}}[{RI}]))"
    misses = f"sum by ({by}) (rate(cache_misses_total{{{selector}}}[{RI}]))"
    lookups = f"(({hits} or {misses} * 0) + ({misses} or {hits} * 0))"
    return f"({hits} or {misses} * 0)\n/\n{lookups}"


SVC = 'job=~"$service"'
NOT_OPS = 'path!~"/health|/ready|/metrics"'


# --------------------------------------------------------------------------- dashboards
def overview() -> dict[str, Any]:
    """The overview of the items service with cache and worker."""
    panels = [
        stat(
            "Requests / s",
            "All requests answered by the selected services.",
            prom(f"sum(rate(requests_total{{{SVC}}}[{RI}]))"),
            unit="reqps",
            decimals=1,
        ),
        stat(
            "5xx share",
            "Share of responses with a 5xx status over the selected services.",
            prom(ratio_5xx(SVC, "")),
            unit="percentunit",
            thresholds=[(0, "green"), (0.01, "orange"), (0.05, "red")],
            decimals=2,
        ),
        stat(
            "Cache hit rate (now)",
            "Share of item cache lookups answered by Redis.",
            prom(cache_hit_ratio(SVC, "")),
            unit="percentunit",
            thresholds=[(0, "red"), (0.5, "orange"), (0.8, "green")],
            decimals=1,
        ),
        stat(
            "Queued tasks (now)",
            "Tasks waiting in the Celery queues (Redis).",
            prom("sum(worker_queue_depth)"),
            thresholds=[(0, "green"), (50, "orange"), (100, "red")],
        ),
        timeseries(
            "Request latency p50 / p95",
            "How long requests take, per service. Dots are exemplars: click one to open the "
            "trace of "
            "that very request in Tempo.",
            [
                prom(quantile(0.5, "request_latency_seconds", SVC, "job"), "p50 {{job}}"),
                prom(
                    quantile(0.95, "request_latency_seconds", SVC, "job"),
                    "p95 {{job}}",
                    exemplar=True,
                ),
            ],
            unit="s",
        ),
        timeseries(
            "Error rate (5xx)",
            "Share of responses with a 5xx status, per service. A rise on the gateway with the "
            "same rise "
            "on one backend points at that backend.",
            [prom(ratio_5xx(SVC, "job"), "{{job}}")],
            unit="percentunit",
            thresholds=[(0, "green"), (0.05, "red")],
        ),
        timeseries(
            "DB query time p95",
            "95th percentile of database operations, per operation. Slow queries show here "
            "before they "
            "show in request latency.",
            [
                prom(
                    quantile(0.95, "db_operation_seconds", SVC, "job, operation"),
                    "{{job}} {{operation}}",
                    exemplar=True,
                )
            ],
            unit="s",
        ),
        timeseries(
            "Cache hit rate",
            "Share of cache lookups that hit, per cache. A collapse means every read goes to "
            "PostgreSQL.",
            [prom(cache_hit_ratio(SVC, "job, cache"), "{{job}} {{cache}}")],
            unit="percentunit",
            max_=1,
            thresholds=[(0, "red"), (0.5, "green")],
        ),
        timeseries(
            "Worker queue depth",
            "Tasks waiting per Celery queue. A steady climb means tasks arrive faster than the "
            "workers "
            "finish them.",
            [prom("sum by (queue) (worker_queue_depth)", "{{queue}}")],
            thresholds=[(0, "green"), (100, "red")],
        ),
        timeseries(
            "DB queries per request",
            "Database statements per request answered, per service (health checks and scrapes "
            "not counted). A list route that queries once per row (N+1) multiplies it.",
            [
                prom(
                    f"sum by (job) (rate(db_operation_seconds_count{{{SVC}}}[{RI}]))\n/\n"
                    f"sum by (job) (rate(requests_total{{{SVC},{NOT_OPS}}}[{RI}]))",
                    "{{job}}",
                )
            ],
            thresholds=[(0, "green"), (10, "red")],
        ),
        timeseries(
            "CPU per service",
            "CPU time per second of each process (1 = a whole core), from prometheus_client's "
            "process collector. A route doing needless work shows here first.",
            [prom(f"sum by (job) (rate(process_cpu_seconds_total{{{SVC}}}[{RI}]))", "{{job}}")],
            unit="percentunit",
            thresholds=[(0, "green"), (0.25, "red")],
        ),
        timeseries(
            "Memory (RSS) per service",
            "Resident memory of each process. Flat once a service has started; a steady climb "
            "is a leak.",
            [prom(f"sum by (job) (process_resident_memory_bytes{{{SVC}}})", "{{job}}")],
            unit="bytes",
        ),
        timeseries(
            "Worker tasks / s by outcome",
            "Celery tasks finished per second, per task and state.",
            [prom(f"sum by (task, state) (rate(celery_tasks_total[{RI}]))", "{{task}} {{state}}")],
            unit="ops",
            stack=True,
        ),
        timeseries(
            "Request rate by service",
            "Requests per second answered by each service.",
            [prom(f"sum by (job) (rate(requests_total{{{SVC}}}[{RI}]))", "{{job}}")],
            unit="reqps",
        ),
        timeseries(
            "Worker task duration p95",
            "95th percentile of Celery task run time, per task.",
            [prom(quantile(0.95, "celery_task_duration_seconds", "", "task"), "{{task}}")],
            unit="s",
        ),
    ]
    return dashboard(
        "otel-lab-overview",
        "Otel Lab - Overview",
        "Latency, errors, database, cache and worker queue at a glance.",
        panels,
        tags=["items", "overview"],
        variables=[job_variable()],
    )


def microtrace() -> dict[str, Any]:
    """MicroTrace: the /analyze service."""
    api = 'job="api"'
    analyze = 'job="api",path="/analyze"'
    panels = [
        stat(
            "/analyze requests / s",
            "Calls to POST /analyze.",
            prom(f"sum(rate(requests_total{{{analyze}}}[{RI}]))"),
            unit="reqps",
            decimals=2,
        ),
        stat(
            "/analyze p95",
            "95th percentile latency of /analyze.",
            prom(quantile(0.95, "request_latency_seconds", analyze)),
            unit="s",
            thresholds=[(0, "green"), (0.1, "orange"), (0.5, "red")],
        ),
        stat(
            "Chaos-delayed share",
            "Share of /analyze requests slower than 100 ms. With CHAOS_ENABLED=true about 5 % of "
            "requests get a 100-200 ms delay; this is where it shows.",
            prom(
                f'1 - (sum(rate(request_latency_seconds_bucket{{{analyze},le="0.1"}}[{RI}])) / '
                f"sum(rate(request_latency_seconds_count{{{analyze}}}[{RI}])))"
            ),
            unit="percentunit",
            decimals=1,
            thresholds=[(0, "green"), (0.02, "orange"), (0.1, "red")],
        ),
        stat(
            "In flight",
            "Requests being handled by the api service right now.",
            prom(f"sum(concurrent_requests{{{api}}})"),
        ),
        timeseries(
            "Requests / s by route and status",
            "What the api service is asked to do, and how it answers.",
            [
                prom(
                    f"sum by (method, path, status) (rate(requests_total{{{api}}}[{RI}]))",
                    "{{method}} {{path}} {{status}}",
                )
            ],
            unit="reqps",
            w=12,
        ),
        timeseries(
            "/analyze latency p50 / p90 / p99",
            "Latency percentiles of /analyze. Exemplars on p99 link to the traces of the slowest "
            "calls "
            "(the parent span, then WorkerService.analyze as its child).",
            [
                prom(quantile(0.5, "request_latency_seconds", analyze), "p50"),
                prom(quantile(0.9, "request_latency_seconds", analyze), "p90"),
                prom(quantile(0.99, "request_latency_seconds", analyze), "p99", exemplar=True),
            ],
            unit="s",
            w=12,
        ),
        heatmap(
            "/analyze latency distribution",
            "Every request in its latency bucket over time: chaos delays form a separate band at "
            "100-200 ms.",
            prom(
                f"sum by (le) (increase(request_latency_seconds_bucket{{{analyze}}}[{RI}]))",
                "{{le}}",
                fmt="heatmap",
            ),
        ),
        timeseries(
            "Errors by type",
            "Application errors counted by the api service (validation, dependency, unexpected).",
            [prom(f"sum by (error_type) (rate(errors_total{{{api}}}[{RI}]))", "{{error_type}}")],
            unit="ops",
            stack=True,
        ),
        traces(
            "Recent /analyze traces",
            "The latest traces of /analyze kept by the Collector's tail sampler. Click a trace id.",
            '{ resource.service.name = "api" && span.http.route = "/analyze" }',
            w=12,
        ),
        traces(
            "Slow /analyze traces (> 100 ms)",
            "Traces slower than 100 ms: with chaos mode on, the injected delay is visible as a "
            "span.",
            '{ resource.service.name = "api" && span.http.route = "/analyze" && duration > 100ms }',
            w=12,
        ),
        logs(
            "api logs",
            "Structured JSON logs of the api service (request_id, trace_id). Open a line's "
            "trace_id to "
            "jump to its trace.",
            '{service_name="api"}',
        ),
    ]
    return dashboard(
        "otel-lab-microtrace",
        "Otel Lab - MicroTrace (/analyze)",
        "MicroTrace view: request counts, latency histogram, errors and the /analyze "
        "traces "
        "and logs, correlated by request id and trace id.",
        panels,
        tags=["microtrace", "api"],
    )


# The callers' client-duration bucket rates per called service (job). The client metric names
# its peer by server.address and server.port only; the scrape target with that address (the
# `up` series' instance, host:port, in Prometheus and in the console alike) gives the job.
DOWNSTREAM_CLIENT = (
    "sum by (le, server_address, server_port) "
    f"(rate(http_client_request_duration_seconds_bucket[{RI}])) "
    "* on (server_address, server_port) group_left (job) count by (job, server_address, "
    'server_port) (label_replace(label_replace(up{job=~"$service"}, "server_address", "$1", '
    '"instance", "(.+):[0-9]+"), "server_port", "$1", "instance", ".+:([0-9]+)"))'
)


def service_view() -> dict[str, Any]:
    """The service view of the gateway -> user -> order -> audit chain."""
    chain = 'job=~"gateway|user-service|order-service|audit-service"'
    panels = [
        row("Dependency map"),
        service_map(
            "Service dependency map",
            "Who calls whom, with request rate, error share and latency per edge. Drawn by Tempo "
            "from "
            "the traces_service_graph_* series the Collector's servicegraph connector computes "
            "from "
            "every span (before sampling).",
        ),
        table(
            "Calls per edge",
            "Requests per second between each client and server, from the same service-graph "
            "series.",
            [
                prom(
                    f"sum by (client, server) (rate(traces_service_graph_request_total[{RI}]))",
                    instant=True,
                    fmt="table",
                ),
                prom(
                    "sum by (client, server) "
                    f"(rate(traces_service_graph_request_failed_total[{RI}]))",
                    instant=True,
                    fmt="table",
                ),
            ],
            unit="reqps",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value #A": "requests/s", "Value #B": "failed/s"},
                    },
                },
            ],
        ),
        timeseries(
            "Request flow through the chain",
            "POST /process at each hop (gateway /api/v1/process -> user -> order -> audit). The "
            "lines should move together; a gap shows where requests are lost.",
            [
                prom(
                    f'sum by (job) (rate(requests_total{{{chain},path=~".*process"}}[{RI}]))',
                    "{{job}}",
                )
            ],
            unit="reqps",
        ),
        row("Errors and latency ($service)"),
        timeseries(
            "Error rate per service",
            "Share of 5xx responses per service. An error in the audit service propagates: it "
            "shows on "
            "order, user and gateway too. The deepest service with errors is the cause.",
            [prom(ratio_5xx(SVC, "job"), "{{job}}")],
            unit="percentunit",
            thresholds=[(0, "green"), (0.05, "red")],
        ),
        timeseries(
            "Latency percentiles",
            "p50, p90, p95 and p99 of request latency across the selected services.",
            [
                prom(quantile(0.5, "request_latency_seconds", SVC), "p50"),
                prom(quantile(0.9, "request_latency_seconds", SVC), "p90"),
                prom(quantile(0.95, "request_latency_seconds", SVC), "p95"),
                prom(quantile(0.99, "request_latency_seconds", SVC), "p99", exemplar=True),
            ],
            unit="s",
        ),
        timeseries(
            "p95 latency per route",
            "Which routes are slow. Dots are exemplars linking to traces.",
            [
                prom(
                    quantile(0.95, "request_latency_seconds", SVC, "job, path"),
                    "{{job}} {{path}}",
                    exemplar=True,
                )
            ],
            unit="s",
        ),
        timeseries(
            "Downstream call latency: client vs server (p95)",
            "Per called service, the p95 of its callers' http.client.request.duration next to "
            "the p95 of its own http.server.request.duration (the same bucket bounds). The gap "
            "is the network, queueing and client overhead. The client metric names its peer by "
            "server.address and server.port: the scrape target (up) at that address names the "
            "service.",
            [
                prom(
                    f"histogram_quantile(0.95, sum by (le, job) ({DOWNSTREAM_CLIENT}))",
                    "{{job}} client",
                ),
                prom(
                    f"histogram_quantile(0.95, sum by (le, job) "
                    f"(rate(http_server_request_duration_seconds_bucket{{{SVC}}}[{RI}]))) "
                    f"and on (job) sum by (job) ({DOWNSTREAM_CLIENT})",
                    "{{job}} server",
                ),
            ],
            unit="s",
        ),
        state_timeline(
            "Circuit breakers",
            "State of each service's breaker towards its downstream: closed, half-open, open.",
            prom("max by (job, downstream) (circuit_breaker_state)", "{{job}} -> {{downstream}}"),
            w=12,
            h=8,
        ),
        row("Database query analysis ($service)"),
        timeseries(
            "DB query time p95 by operation",
            "95th percentile per database operation; exemplars open the trace with the SQL span.",
            [
                prom(
                    quantile(0.95, "db_operation_seconds", SVC, "operation"),
                    "{{operation}}",
                    exemplar=True,
                )
            ],
            unit="s",
            w=8,
        ),
        timeseries(
            "DB operations / s",
            "How often each database operation runs. A jump with the same request rate means N+1 "
            "queries or a cache that stopped hitting.",
            [
                prom(
                    f"sum by (operation) (rate(db_operation_seconds_count{{{SVC}}}[{RI}]))",
                    "{{operation}}",
                )
            ],
            unit="ops",
            w=8,
            stack=True,
        ),
        timeseries(
            "Mean DB time by operation",
            "Average time per operation (sum / count).",
            [
                prom(
                    f"sum by (operation) (rate(db_operation_seconds_sum{{{SVC}}}[{RI}])) / "
                    f"sum by (operation) (rate(db_operation_seconds_count{{{SVC}}}[{RI}]))",
                    "{{operation}}",
                )
            ],
            unit="s",
            w=8,
        ),
        row("Traces (TraceQL)"),
        traces(
            "Error traces",
            "TraceQL `{ status = error }`: every kept trace with an error span.",
            "{ status = error }",
            w=8,
        ),
        traces("Slow traces (> 1 s)", "TraceQL `{ duration > 1s }`.", "{ duration > 1s }", w=8),
        traces(
            "The user-service chain",
            'TraceQL `{ resource.service.name = "user-service" }`.',
            '{ resource.service.name = "user-service" }',
            w=8,
        ),
    ]
    return dashboard(
        "otel-lab-services",
        "Otel Lab - Service view",
        "Service view of the chain: dependency map, request flow through the chain, error rate, "
        "latency "
        "percentiles and database query analysis.",
        panels,
        tags=["service-chain", "services"],
        variables=[job_variable()],
    )


def enhanced_tracing() -> dict[str, Any]:
    """The metrics of the enhanced tracing showcase (REQUEST_TIME, DB_OPERATION_TIME, ...)."""
    panels = [
        timeseries(
            "Requests by endpoint and status (REQUEST_COUNTER)",
            "requests_total per method, route template and status code.",
            [
                prom(
                    f"sum by (method, path, status) (rate(requests_total{{{SVC}}}[{RI}]))",
                    "{{method}} {{path}} {{status}}",
                )
            ],
            unit="reqps",
        ),
        timeseries(
            "Request latency p95 by endpoint (REQUEST_LATENCY)",
            "95th percentile per route, from the request_latency_seconds histogram; exemplars "
            "link to traces.",
            [
                prom(
                    quantile(0.95, "request_latency_seconds", SVC, "path"),
                    "{{path}}",
                    exemplar=True,
                )
            ],
            unit="s",
        ),
        timeseries(
            "Mean request time (REQUEST_TIME)",
            "Average request time per route (sum / count of the same histogram).",
            [
                prom(
                    f"sum by (path) (rate(request_latency_seconds_sum{{{SVC}}}[{RI}])) / "
                    f"sum by (path) (rate(request_latency_seconds_count{{{SVC}}}[{RI}]))",
                    "{{path}}",
                )
            ],
            unit="s",
        ),
        timeseries(
            "Concurrent requests (CONCURRENT_REQUESTS)",
            "Requests in flight per service.",
            [prom(f"sum by (job) (concurrent_requests{{{SVC}}})", "{{job}}")],
        ),
        timeseries(
            "DB operation time p95 (DB_OPERATION_TIME)",
            "95th percentile per database operation (/db-operation, users and todos CRUD).",
            [
                prom(
                    quantile(0.95, "db_operation_seconds", SVC, "operation"),
                    "{{operation}}",
                    exemplar=True,
                )
            ],
            unit="s",
        ),
        timeseries(
            "External API time p95 (API_OPERATION_TIME)",
            "95th percentile of calls to external APIs (the weather upstream of /weather/{city}).",
            [
                prom(
                    quantile(0.95, "api_operation_seconds", SVC, "operation"),
                    "{{operation}}",
                    exemplar=True,
                )
            ],
            unit="s",
        ),
        timeseries(
            "Errors by type (ERROR_COUNTER)",
            "errors_total per error type: /error-simulation, failed external calls, validation "
            "errors.",
            [prom(f"sum by (error_type) (rate(errors_total{{{SVC}}}[{RI}]))", "{{error_type}}")],
            unit="ops",
            stack=True,
        ),
        timeseries(
            "Latency p95 by route, OpenTelemetry metric",
            "The same latency from the SDKs' stable http.server.request.duration metric, pushed "
            "over "
            "OTLP through the Collector: it should track the panel above it.",
            [
                prom(
                    f"histogram_quantile(0.95, sum by (le, http_route) "
                    f"(rate(http_server_request_duration_seconds_bucket{{{SVC}}}[{RI}])))",
                    "{{http_route}}",
                )
            ],
            unit="s",
        ),
        table(
            "Span RED by operation (span metrics)",
            "Calls/s and errors/s per service and span name, from the Collector's spanmetrics "
            "connector "
            "(all spans, before sampling): includes the manual spans of /complex-operation and "
            "/db-operation.",
            [
                prom(
                    "sum by (service_name, span_name) "
                    f"(rate(traces_spanmetrics_calls_total{{{SVC}}}[{RI}]))",
                    instant=True,
                    fmt="table",
                ),
                prom(
                    f"sum by (service_name, span_name) (rate(traces_spanmetrics_calls_total{{{SVC},"
                    f'status_code="STATUS_CODE_ERROR"}}[{RI}]))',
                    instant=True,
                    fmt="table",
                ),
            ],
            w=24,
            unit="ops",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value #A": "calls/s", "Value #B": "errors/s"},
                    },
                },
            ],
        ),
    ]
    return dashboard(
        "otel-lab-enhanced-tracing",
        "Otel Lab - Enhanced tracing metrics",
        "Enhanced tracing metrics: request counter and latency, DB and external API operation "
        "time, errors and concurrency, next to the OpenTelemetry and span-derived views of the "
        "same traffic.",
        panels,
        tags=["enhanced-tracing", "metrics"],
        variables=[job_variable()],
    )


def slo() -> dict[str, Any]:
    """SLOs of the public endpoints (see deploy/prometheus/rules/slo.yml)."""
    by = "method, path"

    def err_ratio(window: str, kind: str) -> str:
        if kind == "availability":
            return ratio_5xx(PUBLIC, by, window)
        return (
            f"1 - (sum by ({by}) "
            f'(rate(request_latency_seconds_bucket{{{PUBLIC},le="0.5"}}[{window}]))\n/\n'
            f"sum by ({by}) (rate(request_latency_seconds_count{{{PUBLIC}}}[{window}])))"
        )

    # The two instant queries (1 h, 1 d) side by side as columns of one table.
    hour_and_day_columns = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "renameByName": {"Value #A": "1 h", "Value #B": "1 d"},
            },
        },
    ]

    panels = [
        row("Availability: 99.5 % of requests without 5xx"),
        table(
            "Availability per endpoint (last 1 h and 1 d)",
            "Share of requests answered without a 5xx, per public endpoint.",
            [
                prom(f"1 - ({err_ratio('1h', 'availability')})", instant=True, fmt="table"),
                prom(f"1 - ({err_ratio('1d', 'availability')})", instant=True, fmt="table"),
            ],
            unit="percentunit",
            w=12,
            transformations=hour_and_day_columns,
        ),
        timeseries(
            "Availability burn rate (1 h)",
            "How fast the error budget burns: 1 = exactly on budget for 30 days; 14.4 over 1 h "
            "(and "
            "5 min) pages (SLOAvailabilityBurnRateFast).",
            [prom(f"({err_ratio('1h', 'availability')}) / 0.005", "{{method}} {{path}}")],
            thresholds=[(0, "green"), (6, "orange"), (14.4, "red")],
            w=12,
        ),
        row("Latency: 99 % of requests within 500 ms"),
        table(
            "Share of requests within 500 ms (last 1 h and 1 d)",
            "Per public endpoint.",
            [
                prom(f"1 - ({err_ratio('1h', 'latency')})", instant=True, fmt="table"),
                prom(f"1 - ({err_ratio('1d', 'latency')})", instant=True, fmt="table"),
            ],
            unit="percentunit",
            w=12,
            transformations=hour_and_day_columns,
        ),
        timeseries(
            "Latency burn rate (1 h)",
            "1 = on budget; 14.4 over 1 h (and 5 min) pages (SLOLatencyBurnRateFast).",
            [prom(f"({err_ratio('1h', 'latency')}) / 0.01", "{{method}} {{path}}")],
            thresholds=[(0, "green"), (6, "orange"), (14.4, "red")],
            w=12,
        ),
        row("Error budget and alerts"),
        timeseries(
            "Error budget left (30 days)",
            "1 - (errors in the last 30 days / budget). Below 0 the SLO is missed over the window.",
            [
                prom(
                    f"1 - (({err_ratio('30d', 'availability')}) / 0.005)",
                    "availability {{method}} {{path}}",
                ),
                prom(
                    f"1 - (({err_ratio('30d', 'latency')}) / 0.01)", "latency {{method}} {{path}}"
                ),
            ],
            unit="percentunit",
            min_=None,
            thresholds=[(0, "red"), (0.25, "orange"), (0.5, "green")],
            w=12,
        ),
        table(
            "Firing SLO alerts",
            "The multi-window burn-rate alerts of deploy/prometheus/rules/slo.yml that fire now.",
            [prom('ALERTS{alertstate="firing",alertname=~"SLO.*"}', instant=True, fmt="table")],
            w=12,
            transformations=[
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}},
                }
            ],
        ),
    ]
    return dashboard(
        "otel-lab-slo",
        "Otel Lab - SLOs",
        "Availability and latency objectives of the public endpoints (through the gateway), "
        "their burn "
        "rates and remaining error budget.",
        panels,
        tags=["slo"],
        time_from="now-6h",
    )


DASHBOARDS = {
    "otel-lab-overview.json": overview,
    "microtrace.json": microtrace,
    "service-view.json": service_view,
    "enhanced-tracing.json": enhanced_tracing,
    "slo.json": slo,
}


DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "dashboards.md"


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def render_docs() -> str:
    """docs/dashboards.md: every dashboard and what each panel answers (from the descriptions)."""
    lines = [
        "# Dashboards",
        "",
        "Generated by `python deploy/grafana/build_dashboards.py` from the panel descriptions;",
        "do not edit by hand. Grafana: http://localhost:3000 (admin/admin), folder *Otel Lab*.",
        "Every panel shows the same text under its (i) icon.",
        "",
        "Panels marked *(collector)* read series the OpenTelemetry Collector makes in stack",
        "and cluster modes (span metrics, the service graph, OTLP-pushed metrics); in embedded",
        "mode the console derives the same series from the spans and metrics it receives",
        "(see console-dashboards.md).",
        "",
    ]
    collector_only = (
        "traces_spanmetrics_",
        "traces_service_graph_",
        "http_server_request_duration",
        "http_client_request_duration",
    )
    for name, build in DASHBOARDS.items():
        d = build()
        lines += [f"## {d['title']}", "", f"`/d/{d['uid']}` ({name}). {d['description']}", ""]
        lines += ["| panel | what it answers |", "|---|---|"]
        for panel in d["panels"]:
            if panel["type"] == "row":
                lines.append(f"| **{panel['title']}** | |")
                continue
            queries = " ".join(
                str(t.get("expr") or t.get("query") or t.get("queryType")) for t in panel["targets"]
            )
            tag = " *(collector)*" if any(c in queries for c in collector_only) else ""
            if panel["type"] == "nodeGraph":
                tag = " *(collector)*"
            text = panel["description"].replace("|", "\\|")
            lines.append(f"| {panel['title']}{tag} | {text} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args(argv)
    outputs = {OUT_DIR / name: text for name, text in render().items()}
    outputs[DOCS_FILE] = render_docs()
    stale = []
    for path, text in outputs.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python deploy/grafana/build_dashboards.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
