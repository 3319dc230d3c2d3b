"""What telemetry costs: throughput and latency with telemetry fully on versus fully off.

Runs the whole system with ``otel-lab up`` once per variant (telemetry off with
``OTEL_SDK_DISABLED=true``; on as shipped: 100 % sampling, metrics, logs exported to the
console; on with 10 % head sampling), drives each endpoint with wrk from a separate
process, and prints the figures and the ratios against "off". All runs happen in the same
invocation on the same machine, so the ratios compare like with like.

    make bench                      # or: .venv/bin/python scripts/bench.py --duration 10
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from otel_lab.runtime.harness import RunningSystem, running_system


@dataclass(frozen=True)
class Scenario:
    name: str
    service: str
    path: str
    method: str = "GET"
    body: str | None = None
    target: float | None = None  # the issue's minimum on/off throughput ratio


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def _prepare(system: RunningSystem) -> dict[str, str]:
    """Data the scenarios need: an enriched, cached item."""
    api = system.url("api")
    item = httpx.post(f"{api}/items", json={"name": "bench item"}, timeout=10).json()
    deadline = time.monotonic() + 15
    while httpx.get(f"{api}/items/{item['id']}").json()["status"] != "enriched":
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not enrich the bench item")
        time.sleep(0.2)
    return {"item_id": str(item["id"])}


def _lua_script(scenario: Scenario, directory: Path) -> list[str]:
    if scenario.method == "GET":
        return []
    script = directory / "request.lua"
    script.write_text(
        f'wrk.method = "{scenario.method}"\n'
        f"wrk.body = [[{scenario.body or ''}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return ["-s", str(script)]


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, extra: list[str], duration: int, connections: int) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result(
        rps, _ms(*p50.groups()), _ms(*p99.groups()), int(errors.group(1)) if errors else 0
    )


def measure(
    env: dict[str, str], scenarios: list[Scenario], duration: int, connections: int
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    with (
        tempfile.TemporaryDirectory(prefix="otel-lab-bench-") as tmp,
        running_system(Path(tmp) / "data", env=env) as system,
    ):
        values = _prepare(system)
        for scenario in scenarios:
            if scenario.service not in system.urls:
                continue
            url = system.url(scenario.service) + scenario.path.format(**values)
            extra = _lua_script(scenario, Path(tmp))
            run_wrk(url, extra, 2, connections)  # warm-up: connection pools, caches
            results[scenario.name] = run_wrk(url, extra, duration, connections)
    return results


SCENARIOS = [
    Scenario("trivial endpoint (GET /health)", "api", "/health", target=0.75),
    Scenario("cache-hit read (GET /items/{id})", "api", "/items/{item_id}", target=0.90),
    Scenario(
        "service chain (POST /api/v1/process via gateway)",
        "gateway",
        "/api/v1/process",
        method="POST",
        body='{"user_id": 1001, "action": "bench"}',
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    common = {"OTEL_TRACES_SAMPLER": "always_on", "LOG_LEVEL": "INFO"}
    variants = {
        "off": {**common, "OTEL_SDK_DISABLED": "true"},
        "on": common,
        # Not a target: what head sampling at 10 % buys back (metrics and logs stay on).
        "on, 10% sampled": {
            **common,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    }
    results: dict[str, dict[str, Result]] = {}
    for variant, env in variants.items():
        print(f"measuring with telemetry {variant} ...", flush=True)
        results[variant] = measure(env, SCENARIOS, args.duration, args.connections)

    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, one uvicorn process per service")
    header = (
        f"{'scenario':50} {'telemetry':16} {'req/s':>8} {'vs off':>7} {'target':>7}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
    )
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        baseline = results["off"].get(scenario.name)
        if baseline is None:
            continue
        for variant, by_scenario in results.items():
            result = by_scenario[scenario.name]
            ratio = result.requests_per_second / baseline.requests_per_second
            target = f">={scenario.target:.2f}" if scenario.target and variant == "on" else ""
            print(
                f"{scenario.name:50} {variant:16} {result.requests_per_second:8.0f}"
                f" {ratio:7.2f} {target:>7} {result.p50_ms:8.2f} {result.p99_ms:8.2f}"
                f" {result.errors:8d}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
