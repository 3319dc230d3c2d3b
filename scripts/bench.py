"""What telemetry costs: CPU per request with telemetry fully on versus fully off.

Starts two whole systems side by side on their own free ports, one with
``OTEL_SDK_DISABLED=true`` ("off") and one as shipped ("on": 100 % sampling, metrics, logs,
OTLP export to its console), and measures them in alternation over a few rounds, so the
"off" and "on" figures of a round are taken within seconds of each other (this host's speed
drifts by up to 1.6x from one minute to the next). Each measurement drives one endpoint
with wrk from a separate process and reads the CPU time the service processes spent from
``/proc`` (psutil); CPU per request is the figure of record, because wrk, the console and
the services share two cores and throughput alone mixes their costs in. For "on" it also
reports the console's CPU per span ingested.

    make bench                                   # 3 rounds of 5 s per endpoint and variant
    .venv/bin/python scripts/bench.py --rounds 5 --duration 8
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchlib import cpu_seconds, minor_faults, wrk

from otel_lab.runtime.harness import RunningSystem, running_system


@dataclass(frozen=True)
class Scenario:
    name: str
    entry: str  # the service wrk talks to
    path: str
    processes: tuple[str, ...]  # the services whose CPU a request costs
    method: str = "GET"
    body: str | None = None
    target: float | None = None  # the maximum CPU ratio on/off (telemetry's cost)
    # The most CPU a request may cost, off and on, in ms (the system's own cost).
    budget_ms: tuple[float, float] | None = None


SCENARIOS = (
    Scenario("trivial endpoint (GET /health)", "api", "/health", ("api",), target=1.33),
    Scenario("cache-hit read (GET /items/{id})", "api", "/items/{item_id}", ("api",), target=1.11),
    Scenario(
        "service chain (POST /api/v1/process)",
        "gateway",
        "/api/v1/process",
        ("gateway", "user-service", "order-service", "audit-service"),
        method="POST",
        body='{"user_id": 1001, "action": "bench"}',
        target=1.25,
        budget_ms=(10.0, 13.0),
    ),
)


@dataclass
class Sample:
    requests: int
    seconds: float
    cpu_seconds: float  # of the scenario's service processes
    main_cpu_seconds: float = 0.0  # of their main threads (the event loops)
    minor_faults: int = 0  # of the scenario's service processes
    console_cpu_seconds: float = 0.0
    spans_ingested: int = 0
    errors: int = 0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(self.requests, 1) * 1e6

    @property
    def main_us_per_request(self) -> float:
        return self.main_cpu_seconds / max(self.requests, 1) * 1e6

    @property
    def faults_per_request(self) -> float:
        return self.minor_faults / max(self.requests, 1)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


@dataclass
class Variant:
    name: str
    system: RunningSystem
    values: dict[str, str]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    console_idle_ms_per_s: float = 0.0  # the console's CPU with no requests coming in


def console_idle(variant: Variant, seconds: float = 5.0) -> float:
    """The console's CPU in ms per second while no requests arrive: rule evaluation,
    scrapes of the services' /metrics and the services' periodic metric exports. It runs
    during a measurement too, so it is part of the CPU per span below (shown apart)."""
    pid = variant.system.pid("console")
    before = _cpu_seconds([pid])
    time.sleep(seconds)
    return (_cpu_seconds([pid]) - before) / seconds * 1000


def _prepare(system: RunningSystem) -> dict[str, str]:
    """Data the scenarios need: an enriched, cached item."""
    api = system.url("api")
    item = httpx.post(f"{api}/items", json={"name": "bench item"}, timeout=10).json()
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/items/{item['id']}", timeout=10).json()["status"] != "enriched":
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not enrich the bench item")
        time.sleep(0.2)
    return {"item_id": str(item["id"])}


def _cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def _main_thread_cpu_seconds(pids: list[int]) -> float:
    """The main threads' share: a thread's /proc/<pid>/task/<tid>/stat has the same fields,
    and the main thread's tid is the pid. The rest is the export, metric-reader and thread
    pool threads."""
    return sum(cpu_seconds(pid, task=pid) for pid in pids)


def _spans_written(system: RunningSystem) -> int:
    stats = httpx.get(system.url("console") + "/api/stats", timeout=10).json()
    return int(stats["written"]["spans"])


def measure(
    variant: Variant, scenario: Scenario, tmp: Path, duration: int, connections: int
) -> Sample:
    system = variant.system
    url = system.url(scenario.entry) + scenario.path.format(**variant.values)
    pids = [system.pid(name) for name in scenario.processes]
    console_pid = system.pid("console")
    spans_before = _spans_written(system)
    console_before = _cpu_seconds([console_pid])
    cpu_before = _cpu_seconds(pids)
    main_before = _main_thread_cpu_seconds(pids)
    faults_before = sum(map(minor_faults, pids))
    started = time.monotonic()
    run = wrk(
        url, duration=duration, connections=connections, tmp=tmp,
        method=scenario.method, body=scenario.body,
    )  # fmt: skip
    requests, errors = run.requests, run.non_2xx
    seconds = time.monotonic() - started
    cpu = _cpu_seconds(pids) - cpu_before
    main = _main_thread_cpu_seconds(pids) - main_before
    faults = sum(map(minor_faults, pids)) - faults_before
    if variant.name == "off":
        return Sample(requests, seconds, cpu, main, faults, errors=errors)
    time.sleep(1.5)  # the exporters' schedule delay: let the console ingest this batch
    return Sample(
        requests,
        seconds,
        cpu,
        main,
        faults,
        console_cpu_seconds=_cpu_seconds([console_pid]) - console_before,
        spans_ingested=_spans_written(system) - spans_before,
        errors=errors,
    )


@contextlib.contextmanager
def variants(tmp: Path) -> Iterator[list[Variant]]:
    common = {"OTEL_TRACES_SAMPLER": "always_on", "LOG_LEVEL": "INFO"}
    environments = {"off": {**common, "OTEL_SDK_DISABLED": "true"}, "on": common}
    with contextlib.ExitStack() as stack:
        started = [
            Variant(name, stack.enter_context(running_system(tmp / name, env=env)), {})
            for name, env in environments.items()
        ]
        for variant in started:
            variant.values = _prepare(variant.system)
        yield started


def _median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def report(
    found: list[Variant],
    scenarios: tuple[Scenario, ...],
    rounds: int,
    duration: int,
    connections: int,
) -> None:
    print(
        f"\n{rounds} rounds, wrk -t1 -c{connections} -d{duration}s per endpoint and variant, "
        "medians; CPU = user+system time of the service processes per request"
    )
    header = (
        f"{'scenario':38} {'CPU off us':>10} {'CPU on us':>10} {'on/off':>7} {'target':>7}"
        f" {'req/s off':>9} {'req/s on':>9} {'ratio':>6} {'console us/span':>15}"
    )
    print(header)
    print("-" * len(header))
    off, on = found
    for scenario in scenarios:
        so, sn = off.samples[scenario.name], on.samples[scenario.name]
        cpu_off = _median(so, "cpu_us_per_request")
        cpu_on = _median(sn, "cpu_us_per_request")
        ratio = cpu_on / cpu_off
        verdict = "ok" if scenario.target and ratio <= scenario.target else "MISSED"
        console = statistics.median(
            s.console_cpu_seconds / max(s.spans_ingested, 1) * 1e6 for s in sn
        )
        # The console's idle CPU spread over the spans of a measurement (its wrk run and
        # the 1.5 s of ingest after it).
        idle_share = statistics.median(
            on.console_idle_ms_per_s * (s.seconds + 1.5) / max(s.spans_ingested, 1) * 1e3
            for s in sn
        )
        rps_off = _median(so, "requests_per_second")
        rps_on = _median(sn, "requests_per_second")
        print(
            f"{scenario.name:38} {cpu_off:10.0f} {cpu_on:10.0f} {ratio:7.2f}"
            f" {f'<={scenario.target:.2f}':>7} {rps_off:9.0f} {rps_on:9.0f}"
            f" {rps_on / rps_off:6.2f} {console:15.1f}  {verdict}"
        )
        main_off, main_on = _median(so, "main_us_per_request"), _median(sn, "main_us_per_request")
        print(
            f"    main threads (event loops) off {main_off:.0f} / on {main_on:.0f} us, other"
            f" threads (export, metric reader, thread pool) off {cpu_off - main_off:.0f} /"
            f" on {cpu_on - main_on:.0f} us; console CPU per span: {idle_share:.1f} us of it"
            " is the console's idle work; minor page faults per request off"
            f" {_median(so, 'faults_per_request'):.2f} / on {_median(sn, 'faults_per_request'):.2f}"
        )
        if scenario.budget_ms:
            budget_off, budget_on = scenario.budget_ms
            print(
                f"    CPU per request, all {len(scenario.processes)} processes: off"
                f" {cpu_off / 1000:.1f} ms (budget <= {budget_off:g} ms), on"
                f" {cpu_on / 1000:.1f} ms (budget <= {budget_on:g} ms)"
            )
        errors = sum(s.errors for s in so + sn)
        if errors:
            print(f"    ({errors} non-2xx answers in this scenario)")
    print(
        f"\nconsole idle (rules, scrapes, metric exports): {on.console_idle_ms_per_s:.1f} ms of"
        " CPU per second"
    )
    print("\nper round (CPU us per request, off / on):")
    for scenario in scenarios:
        pairs = zip(off.samples[scenario.name], on.samples[scenario.name], strict=True)
        figures = "  ".join(
            f"{a.cpu_us_per_request:.0f}/{b.cpu_us_per_request:.0f}" for a, b in pairs
        )
        print(f"  {scenario.name:38} {figures}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--only", help="run only the scenarios whose name contains this text", default=""
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    scenarios = tuple(s for s in SCENARIOS if args.only in s.name)

    with tempfile.TemporaryDirectory(prefix="otel-lab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print("starting a system with telemetry off and one with telemetry on ...", flush=True)
        with variants(tmp) as found:
            for scenario in scenarios:  # warm-up: connection pools and caches
                for variant in found:
                    measure(variant, scenario, tmp, 2, args.connections)
            found[1].console_idle_ms_per_s = console_idle(found[1])
            for round_number in range(args.rounds):
                print(f"round {round_number + 1}/{args.rounds}", flush=True)
                for scenario in scenarios:
                    order = found if round_number % 2 == 0 else found[::-1]
                    for variant in order:
                        sample = measure(variant, scenario, tmp, args.duration, args.connections)
                        variant.samples.setdefault(scenario.name, []).append(sample)
            report(found, scenarios, args.rounds, args.duration, args.connections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
