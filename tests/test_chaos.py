"""Chaos mode: with CHAOS_ENABLED=true a share of requests is delayed, and the
delay shows on the server span. A service of its own runs with the rate at 1 and at 0."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from otel_lab.runtime.harness import RunningSystem
from tests.conftest import Console, has_spans, serving, trace_id_of

WEATHER_UPSTREAM = "otel_lab.services.weather_upstream.app"


@contextmanager
def chaos_service(system: RunningSystem, log_dir: Path, rate: str) -> Iterator[str]:
    """The weather upstream (no dependencies of its own) with chaos mode on."""
    env = {
        "CHAOS_ENABLED": "true",
        "CHAOS_RATE": rate,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with serving("chaos-probe", WEATHER_UPSTREAM, env, log_dir) as (base, _):
        yield base


def test_chaos_delays_requests_visibly_on_the_span(
    system: RunningSystem, console: Console, tmp_path: Path
) -> None:
    with chaos_service(system, tmp_path, rate="1.0") as base:
        started = time.perf_counter()
        response = httpx.get(base + "/health")
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    assert elapsed_ms >= 100, f"a chaos delay is 100-200 ms, the request took {elapsed_ms:.0f}"
    (span,) = console.trace(trace_id_of(response), until=has_spans("GET /health"))
    assert 100 <= span["attributes"]["chaos.delay_ms"] <= 200
    assert [e["name"] for e in span["events"]] == ["chaos.delay"]


def test_chaos_rate_zero_delays_nothing(
    system: RunningSystem, console: Console, tmp_path: Path
) -> None:
    with chaos_service(system, tmp_path, rate="0") as base:
        responses = [httpx.get(base + "/health") for _ in range(20)]
    spans = [
        console.trace(trace_id_of(r), until=has_spans("GET /health"))[0] for r in responses[-3:]
    ]
    assert all("chaos.delay_ms" not in s["attributes"] for s in spans)
