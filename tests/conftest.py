"""Session fixtures: the whole system, run by ``otel-lab up`` on free ports, and its console.

Everything is real: PostgreSQL and Valkey from their wheels, uvicorn services talking HTTP,
a Celery worker process, and the console storing what the OTLP exporters send.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_lab.runtime.harness import RunningSystem, running_system

Span = dict[str, Any]


def trace_id_of(response: httpx.Response) -> str:
    """The trace a response belongs to, from its W3C ``traceresponse`` header (HotROD style)."""
    header = response.headers["traceresponse"]
    version, trace_id, _span_id, _flags = header.split("-")
    assert version == "00" and len(trace_id) == 32
    return trace_id


class Console:
    """Reads telemetry back the way a user would: through the console's JSON API."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=5.0)

    def trace(
        self,
        trace_id: str,
        *,
        until: Callable[[list[Span]], bool] | None = None,
        timeout: float = 15.0,
    ) -> list[Span]:
        """The spans of a trace, polled until ``until(spans)`` holds (exports are batched)."""
        deadline = time.monotonic() + timeout
        spans: list[Span] = []
        while time.monotonic() < deadline:
            response = self.client.get(f"/api/traces/{trace_id}")
            if response.status_code == 200:
                spans = response.json()["spans"]
                if spans and (until is None or until(spans)):
                    return spans
            time.sleep(0.25)
        names = [(s["service_name"], s["name"]) for s in spans]
        raise AssertionError(f"trace {trace_id} incomplete after {timeout} s: {names}")

    def logs(
        self,
        trace_id: str,
        *,
        until: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        logs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            response = self.client.get(f"/api/traces/{trace_id}/logs")
            if response.status_code == 200:
                logs = response.json()["logs"]
                if logs and (until is None or until(logs)):
                    return logs
            time.sleep(0.25)
        raise AssertionError(f"logs of trace {trace_id} incomplete after {timeout} s: {logs}")


def span_named(spans: list[Span], name: str, service: str | None = None) -> Span:
    matches = [
        s for s in spans if s["name"] == name and (service is None or s["service_name"] == service)
    ]
    assert matches, (
        f"no span {name!r} ({service}) in {[(s['service_name'], s['name']) for s in spans]}"
    )
    return matches[0]


def children_of(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s["parent_span_id"] == parent["span_id"]]


def ancestors(spans: list[Span], span: Span) -> list[Span]:
    """The spans above ``span``, nearest first."""
    by_id = {s["span_id"]: s for s in spans}
    chain: list[Span] = []
    parent = by_id.get(span["parent_span_id"])
    while parent is not None:
        chain.append(parent)
        parent = by_id.get(parent["parent_span_id"])
    return chain


def server_above(spans: list[Span], span: Span) -> Span:
    """The nearest SERVER span above ``span``: the request span of the service that made it."""
    servers = [s for s in ancestors(spans, span) if s["kind"] == "SERVER"]
    assert servers, f"no server span above {span['name']}"
    return servers[0]


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    data_dir: Path = tmp_path_factory.mktemp("otel-lab")
    env = {
        # Short export intervals so tests read telemetry back within a second or two.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    with running_system(data_dir, env=env) as running:
        yield running


@pytest.fixture(scope="session")
def console(system: RunningSystem) -> Console:
    return Console(system.url("console"))


@pytest.fixture(scope="session")
def api(system: RunningSystem) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url("api"), timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def gateway(system: RunningSystem) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url("gateway"), timeout=15.0) as client:
        yield client
