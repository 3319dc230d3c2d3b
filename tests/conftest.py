"""Session fixtures: the whole system, run by ``otel-lab up`` on free ports, and its console.

Everything is real: PostgreSQL and Valkey from their wheels, uvicorn services talking HTTP,
a Celery worker process, and the console storing what the OTLP exporters send.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_lab.runtime.harness import RunningSystem, free_ports, running_system
from otel_lab.runtime.supervisor import ChildSpec, ManagedProcess, Supervisor, http_ok

Span = dict[str, Any]


def uvicorn_spec(name: str, module: str, port: int, env: Mapping[str, str]) -> ChildSpec:
    """A service of the tests' own, ready when its ``/health`` answers."""
    return ChildSpec(
        name,
        [sys.executable, "-m", "uvicorn", "--factory", f"{module}:create_app", "--port", str(port)],
        env={"OTEL_SERVICE_NAME": name, **env},
        ready=http_ok(f"http://127.0.0.1:{port}/health"),
        ready_timeout=60.0,  # as in `otel-lab up`: imports are slow on a busy 2-core machine
    )


@contextmanager
def serving(
    name: str, module: str, env: Mapping[str, str], log_dir: Path
) -> Iterator[tuple[str, ManagedProcess]]:
    """Run one service on a free port under the runtime's supervisor (which reports its last
    log lines if it fails to start); its base URL and process."""
    (port,) = free_ports(1)
    supervisor = Supervisor(log_dir)
    try:
        child = supervisor.start(uvicorn_spec(name, module, port, env))
        yield f"http://127.0.0.1:{port}", child
    finally:
        supervisor.stop_all()


def trace_id_of(response: httpx.Response) -> str:
    """The trace a response belongs to, from its W3C ``traceresponse`` header (HotROD style)."""
    header = response.headers["traceresponse"]
    version, trace_id, _span_id, _flags = header.split("-")
    assert version == "00" and len(trace_id) == 32
    return trace_id


def session_client(base_url: str, timeout: float) -> httpx.Client:
    """A client kept for the whole session. uvicorn closes a connection idle for 5 s and
    httpx reuses one for 5 s, so a request sent just as the server closed its connection
    was reset (ECONNRESET); connections idle for 2 s are not reused."""
    return httpx.Client(
        base_url=base_url, timeout=timeout, limits=httpx.Limits(keepalive_expiry=2.0)
    )


class Console:
    """Reads telemetry back the way a user would: through the console's JSON API."""

    def __init__(self, base_url: str) -> None:
        self.client = session_client(base_url, timeout=5.0)

    def _poll(
        self,
        path: str,
        key: str,
        until: Callable[[list[Any]], bool] | None,
        timeout: float,
    ) -> tuple[list[Any], bool]:
        """GET ``path`` until its ``key`` list is non-empty and ``until`` holds (exports are
        batched, so telemetry arrives a moment after the request): the last list seen, and
        whether it held."""
        deadline = time.monotonic() + timeout
        items: list[Any] = []
        while time.monotonic() < deadline:
            response = self.client.get(path)
            if response.status_code == 200:
                items = response.json()[key]
                if items and (until is None or until(items)):
                    return items, True
            time.sleep(0.25)
        return items, False

    def trace(
        self,
        trace_id: str,
        *,
        until: Callable[[list[Span]], bool] | None = None,
        timeout: float = 30.0,
    ) -> list[Span]:
        """The spans of a trace, polled until ``until(spans)`` holds."""
        spans, complete = self._poll(f"/api/traces/{trace_id}", "spans", until, timeout)
        if complete:
            return spans
        names = [(s["service_name"], s["name"]) for s in spans]
        raise AssertionError(f"trace {trace_id} incomplete after {timeout} s: {names}")

    def logs(
        self,
        trace_id: str,
        *,
        until: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """The logs of a trace, polled until ``until(logs)`` holds."""
        logs, complete = self._poll(f"/api/traces/{trace_id}/logs", "logs", until, timeout)
        if complete:
            return logs
        raise AssertionError(f"logs of trace {trace_id} incomplete after {timeout} s: {logs}")


def has_spans(*wanted: str | tuple[str, str]) -> Callable[[list[Span]], bool]:
    """``until`` for :meth:`Console.trace`: every span in ``wanted`` has arrived.

    Each entry is a span name or a ``(service, name)`` pair; a name ending in ``*`` matches
    by prefix (``"SELECT*"``). The spans of one trace are exported in batches, so a test
    waits for each span it asserts rather than taking the first batch.
    """

    def matches(span: Span, entry: str | tuple[str, str]) -> bool:
        service, name = entry if isinstance(entry, tuple) else (None, entry)
        if service is not None and span["service_name"] != service:
            return False
        return span["name"].startswith(name[:-1]) if name.endswith("*") else span["name"] == name

    return lambda spans: all(any(matches(s, entry) for s in spans) for entry in wanted)


def served(*services: str) -> Callable[[list[Span]], bool]:
    """``until`` for :meth:`Console.trace`: each service's request span has arrived.

    A service's request span (its middleware's SERVER span, with ``request.id``) ends after
    every span the service made for the request, and its exporter sends batches one after the
    other, in order: once it is in, all of that service's spans of the trace are in. Wait for
    it when asserting anything of a service's spans but the one named in ``has_spans``.
    """

    def request_span(span: Span, service: str) -> bool:
        return (
            span["service_name"] == service
            and span["kind"] == "SERVER"
            and "request.id" in span["attributes"]
        )

    return lambda spans: all(any(request_span(s, svc) for s in spans) for svc in services)


def has_logs(*bodies: str) -> Callable[[list[dict[str, Any]]], bool]:
    """``until`` for :meth:`Console.logs`: a record with each body in ``bodies`` has arrived."""
    return lambda logs: set(bodies) <= {log["body"] for log in logs}


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


SYSTEM_ENV = {
    # Short export intervals so tests read telemetry back within a second or two.
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "OTEL_BLRP_SCHEDULE_DELAY": "200",
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    # The console scrapes /metrics and evaluates the alert rules as often as the
    # Prometheus of tests/deploy does, so rate() windows fill within seconds.
    "CONSOLE_SCRAPE_INTERVAL": "1",
    "CONSOLE_RULES_INTERVAL": "2",
    "CONSOLE_SLOW_RULES_INTERVAL": "4",
}


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    data_dir: Path = tmp_path_factory.mktemp("otel-lab")
    with running_system(data_dir, env=SYSTEM_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def console(system: RunningSystem) -> Console:
    return Console(system.url("console"))


@pytest.fixture(scope="session")
def api(system: RunningSystem) -> Iterator[httpx.Client]:
    with session_client(system.url("api"), timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def gateway(system: RunningSystem) -> Iterator[httpx.Client]:
    with session_client(system.url("gateway"), timeout=15.0) as client:
        yield client


# --------------------------------------------------------------------------- no silent skips
def _unexpected_skip(report: pytest.CollectReport | pytest.TestReport, allowed: bool) -> None:
    if report.skipped and not allowed and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"unexpected skip (mark the test allow_skip if it is meant): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test fails unless it is marked ``allow_skip``: a missing tool or package must
    not let the suite pass with less tested (``make test`` checks the tools before it starts)."""
    outcome = yield
    _unexpected_skip(outcome.get_result(), item.get_closest_marker("allow_skip") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a module that skips itself at import (``pytest.importorskip``)."""
    outcome = yield
    _unexpected_skip(outcome.get_result(), False)
