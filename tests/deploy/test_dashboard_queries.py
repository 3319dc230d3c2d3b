"""The Prometheus queries of the Grafana dashboards, ready to be executed.

Helpers for the end-to-end test that runs every dashboard query against a real Prometheus
scraping the running embedded system under load (issue 5, section 6):

    prometheus_panel_queries()   -> [(dashboard, panel title, expr)]   every Prometheus target
    collector_only_queries()     -> [(dashboard, title, expr, reason)] cannot return data here
    executable_queries()         -> [(dashboard, title, expr)]         must return data here
    expand_grafana_variables(e)  -> a plain PromQL string (no $service, $__rate_interval)

"Collector-only" series exist only in stack or cluster mode: the Collector derives them from
spans (spanmetrics, servicegraph connectors) or receives them over OTLP and pushes them into
Prometheus. In embedded mode OTLP goes to the console, so a Prometheus that scrapes /metrics
never sees them. Queries of series that only exist while something is wrong (firing alerts) are
listed with them.

The tests in this file need no running system: they check the extraction and classification,
and that Prometheus itself parses every query (a real `prometheus` binary, no data).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from otel_lab.console.dashboards import dependency_reason
from otel_lab.runtime.procs import free_ports

from .conftest import GRAFANA_DIR, require_tool

DASHBOARD_DIR = GRAFANA_DIR / "dashboards"

# Values for Grafana's variables when a query runs outside Grafana.
VARIABLE_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$service": ".+",  # the `service` variable's "All" value (allValue)
}


def _dashboards() -> Iterator[tuple[str, dict]]:
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        yield path.stem, json.loads(path.read_text())


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows keep their panels inside


def prometheus_panel_queries() -> list[tuple[str, str, str]]:
    """Every Prometheus-targeted panel query: (dashboard file stem, panel title, expr)."""
    out = []
    for name, dashboard in _dashboards():
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                datasource = target.get("datasource") or panel.get("datasource") or {}
                if datasource.get("type") == "prometheus" and target.get("expr"):
                    out.append((name, panel["title"], target["expr"]))
    return out


def collector_only_queries() -> list[tuple[str, str, str, str]]:
    """Queries that need series the embedded system cannot produce, with the reason."""
    return [(d, t, e, r) for d, t, e in prometheus_panel_queries() if (r := dependency_reason(e))]


def executable_queries() -> list[tuple[str, str, str]]:
    """Queries that must return data against Prometheus scraping the embedded system under load."""
    return [(d, t, e) for d, t, e in prometheus_panel_queries() if dependency_reason(e) is None]


def expand_grafana_variables(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Replace Grafana's variables with values Prometheus accepts (``values`` overrides some)."""
    table = {**VARIABLE_VALUES, **(values or {})}
    for name in sorted(table, key=len, reverse=True):
        expr = expr.replace(name, table[name])
    # Not label_replace's "$1": Grafana leaves a $name alone unless a variable has that name.
    leftover = re.findall(r"\$\{?[A-Za-z_]\w*", expr)
    if leftover:
        raise ValueError(f"unexpanded Grafana variables {leftover} in {expr!r}")
    return expr


# ----------------------------------------------------------------------------- tests
def test_extracts_every_prometheus_target() -> None:
    queries = prometheus_panel_queries()
    total = sum(
        1
        for _, dashboard in _dashboards()
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus"
    )
    assert len(queries) == total > 30
    assert {d for d, _, _ in queries} == {p.stem for p in DASHBOARD_DIR.glob("*.json")}


def test_classification() -> None:
    only = collector_only_queries()
    runnable = executable_queries()
    assert len(only) + len(runnable) == len(prometheus_panel_queries())
    titles = {t for _, t, _, _ in only}
    assert "Calls per edge" in titles  # service graph
    assert "Latency p95 by route, OpenTelemetry metric" in titles
    assert "Firing SLO alerts" in titles
    # The overview panels run on scraped series, in every mode.
    overview = {t for d, t, _ in runnable if d == "otel-lab-overview"}
    for title in (
        "Request latency p50 / p95",
        "Error rate (5xx)",
        "DB query time p95",
        "Cache hit rate",
        "Worker queue depth",
    ):
        assert title in overview


def test_variables_expand() -> None:
    for _, title, expr in prometheus_panel_queries():
        expanded = expand_grafana_variables(expr)
        assert not re.search(r"\$(?!\d)", expanded), title


@pytest.fixture(scope="module")
def empty_prometheus() -> Iterator[str]:
    """A real Prometheus with no targets: it parses and evaluates queries, returning no data."""
    binary = require_tool("prometheus")
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("prometheus did not become ready")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_prometheus_parses_every_panel_query(empty_prometheus: str) -> None:
    """Each query, with its variables expanded, is valid PromQL for a real Prometheus."""
    errors = []
    for dashboard, title, expr in prometheus_panel_queries():
        query = urllib.parse.urlencode({"query": expand_grafana_variables(expr)})
        try:
            with urllib.request.urlopen(
                f"{empty_prometheus}/api/v1/query?{query}", timeout=10
            ) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            errors.append(f"{dashboard} / {title}: {body.get('error')}")
    assert not errors, "\n".join(errors)
