"""The load generators against the running system: ``otel-lab load`` and the Locust file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from otel_lab.runtime.harness import RunningSystem

LOCUSTFILE = Path(__file__).resolve().parents[1] / "scripts" / "locustfile.py"


def test_otel_lab_load_prints_a_summary_per_endpoint(system: RunningSystem) -> None:
    before = httpx.get(system.url("gateway") + "/metrics").text.count("requests_total{")
    result = subprocess.run(
        [sys.executable, "-m", "otel_lab.loadgen", "--host", system.url("gateway"),
         "--runs", "6", "--concurrency", "4", "--delay", "0"],
        capture_output=True, text=True, timeout=120, env={**system.env, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "24 requests in" in out
    for column in ("endpoint", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        assert column in out
    after = httpx.get(system.url("gateway") + "/metrics").text.count("requests_total{")
    assert after >= before, "the traffic went through the gateway"


def test_load_rejects_bad_options(system: RunningSystem) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_lab.loadgen", "--concurrency", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "concurrency" in result.stderr


def test_locustfile_runs_headless_against_the_gateway(system: RunningSystem) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "3",
         "-r", "3", "-t", "6s", "--host", system.url("gateway"), "--only-summary"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-3000:]
    # The stats table's total line: requests made, and none of them failed.
    total = re.search(r"Aggregated\s+(\d+)\s+(\d+)\(", report)
    assert total, report[-3000:]
    requests, failures = map(int, total.groups())
    assert requests > 0 and failures == 0, report[-3000:]
