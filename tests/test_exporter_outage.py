"""A telemetry backend that is down or hangs must not hurt the service: requests still
succeed, and shutdown stays bounded (the SDK's own flush ignores its timeout)."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otel_lab.runtime.harness import free_ports
from tests.conftest import serving

WEATHER_UPSTREAM = "otel_lab.services.weather_upstream.app"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections but never answers: the worst OTLP endpoint."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["refused", "hanging"])
def test_service_works_and_stops_when_the_otlp_endpoint_fails(
    endpoint: str, black_hole: int, tmp_path: Path
) -> None:
    (closed_port,) = free_ports(1)
    otlp_port = black_hole if endpoint == "hanging" else closed_port
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    with serving("exporter-probe", WEATHER_UPSTREAM, env, tmp_path) as (base, child):
        # Enough requests to fill export batches while the exporters fail or hang.
        with httpx.Client(base_url=base, timeout=5) as client:
            statuses = {client.get("/v1/current?city=london").status_code for _ in range(300)}
        assert statuses == {200}
        child.proc.send_signal(signal.SIGTERM)
        try:
            code = child.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the service did not stop on SIGTERM with the OTLP endpoint {endpoint}")
    # uvicorn re-raises the signal it stopped on once it has shut down cleanly.
    assert code in (0, -signal.SIGTERM), child.log_path.read_text()[-2000:]
