"""Chaos mode (seed 001): with CHAOS_ENABLED=true a share of requests is delayed, and the
delay shows on the server span. A service of its own runs with the rate at 1 and at 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from otel_lab.runtime.harness import RunningSystem, free_ports
from tests.conftest import Console, trace_id_of


@contextmanager
def chaos_service(system: RunningSystem, log: Path, rate: str) -> Iterator[str]:
    """The weather upstream (no dependencies of its own) with chaos mode on."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "CHAOS_ENABLED": "true",
        "CHAOS_RATE": rate,
        "OTEL_SERVICE_NAME": "chaos-probe",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "otel_lab.services.weather_upstream.app:app",
         "--port", str(port)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_chaos_delays_requests_visibly_on_the_span(
    system: RunningSystem, console: Console, tmp_path: Path
) -> None:
    with chaos_service(system, tmp_path / "chaos.log", rate="1.0") as base:
        started = time.perf_counter()
        response = httpx.get(base + "/health")
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    assert elapsed_ms >= 100, f"a chaos delay is 100-200 ms, the request took {elapsed_ms:.0f}"
    (span,) = console.trace(trace_id_of(response))
    assert 100 <= span["attributes"]["chaos.delay_ms"] <= 200
    assert [e["name"] for e in span["events"]] == ["chaos.delay"]


def test_chaos_rate_zero_delays_nothing(
    system: RunningSystem, console: Console, tmp_path: Path
) -> None:
    with chaos_service(system, tmp_path / "calm.log", rate="0") as base:
        responses = [httpx.get(base + "/health") for _ in range(20)]
    spans = [console.trace(trace_id_of(r))[0] for r in responses[-3:]]
    assert all("chaos.delay_ms" not in s["attributes"] for s in spans)
