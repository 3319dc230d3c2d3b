"""What the service chain costs: CPU per ``POST /api/v1/process`` in each of its four processes.

Starts the whole system with ``otel-lab up`` once per variant (telemetry off with
``OTEL_SDK_DISABLED=true``; on as shipped), drives the chain through the gateway with wrk
from a separate process, and reads the CPU time (user + system, ``/proc/<pid>/stat``) that
gateway, user-service, order-service and audit-service spent per request. A bare
``GET /health`` on the gateway is measured in the same system, before and after the chain,
as the unit that survives this host's drift: "the chain costs N health requests".
What the processes spend while idle (timers, scrapes; measured for a few seconds after a
warm-up has settled) is subtracted, so a slow moment of the host does not add background
CPU to each request.

    .venv/bin/python scripts/bench_system.py                    # off and on, 8 s each
    .venv/bin/python scripts/bench_system.py --variants off --duration 5
    .venv/bin/python scripts/bench_system.py --startup          # also time otel-lab up
    .venv/bin/python scripts/bench_system.py --startup --variants   # only that
    .venv/bin/python scripts/bench_system.py --startup --variants off   # make bench

``--startup`` times ``otel-lab up`` until it prints its table (every child ready), first on an
empty data directory, then again on the same one (nothing to initialise; ``--startup-runs``
for more), and sums the CPU its process tree spent getting there, also by child: wall time
depends on what else the host runs, the CPU seconds much less.

Each variant also runs the mixed load of ``otel-lab load`` (every scenario by its weight,
``--mixed-concurrency`` requests per round, no delay) through the gateway for
``--duration`` seconds, and reports its requests/s next to the 61/s it saturated at before
(issue 10) and the CPU per request summed over every service and the worker.

Figures are only comparable within one run (the host's speed varies by up to 1.6x).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from benchlib import cpu_seconds, wrk

from otel_lab import registry
from otel_lab.runtime.harness import RunningSystem, running_system, start_system

CHAIN = ("gateway", *registry.CHAIN)
# What serves the mixed load of `otel-lab load`: every service and the worker.
MIXED = (*CHAIN, *(s.name for s in registry.SERVICES if s.name not in CHAIN), registry.WORKER.name)
MIXED_BEFORE_RPS = 61.0  # issue 10: the mixed load saturated at about 61 requests/s
CHAIN_BODY = '{"user_id": 1001, "action": "bench"}'
TARGET_MS = {"off": 10.0, "on": 13.0}  # issue 10
VARIANTS = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "on": {"OTEL_TRACES_SAMPLER": "always_on"},
}


@dataclass
class Run:
    requests: int
    seconds: float
    non_2xx: int
    cpu: dict[str, float]  # process name -> CPU seconds over the run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def ms_per_request(self, name: str | None = None) -> float:
        total = self.cpu[name] if name else sum(self.cpu.values())
        return total * 1000 / max(1, self.requests)


def idle_rate(system: RunningSystem, seconds: float = 4.0) -> dict[str, float]:
    """CPU seconds per second each measured process spends with no requests."""
    pids = {name: system.pid(name) for name in MIXED}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}


def measure(
    system: RunningSystem,
    names: tuple[str, ...],
    url: str,
    body: str | None,
    args,
    tmp: Path,
    idle: dict[str, float],
) -> Run:
    pids = {name: system.pid(name) for name in names}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    run = wrk(url, duration=args.duration, connections=args.connections, body=body, tmp=tmp)
    elapsed = time.monotonic() - started
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return Run(
        requests=run.requests,
        seconds=run.seconds,
        non_2xx=run.non_2xx,
        cpu={name: after[name] - before[name] - idle[name] * elapsed for name in names},
    )


def mixed_load(system: RunningSystem, args, idle: dict[str, float]) -> Run:
    """`otel-lab load`'s mix (every scenario, by weight) through the gateway, from this
    process, ``--mixed-concurrency`` requests per round and no delay between rounds."""
    from otel_lab.loadgen.runner import LoadPlan, run

    plan = LoadPlan(host=system.url("gateway"), concurrency=args.mixed_concurrency, delay=0,
                    duration=args.duration)  # fmt: skip
    pids = {name: system.pid(name) for name in MIXED}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    report = asyncio.run(run(plan))
    elapsed = time.monotonic() - started
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return Run(
        requests=report.total,
        seconds=report.elapsed,
        non_2xx=sum(stats.unexpected for stats in report.stats.values()),
        cpu={name: after[name] - before[name] - idle[name] * elapsed for name in MIXED},
    )


def bench_variant(env: dict[str, str], args) -> dict[str, Run]:
    with (
        tempfile.TemporaryDirectory(prefix="otel-lab-bench-") as tmp,
        running_system(Path(tmp) / "data", env={"LOG_LEVEL": "INFO", **env}) as system,
    ):
        gateway = system.url("gateway")
        chain_url = gateway + "/api/v1/process"
        check = httpx.post(chain_url, content=CHAIN_BODY,
                           headers={"Content-Type": "application/json"}, timeout=10)  # fmt: skip
        check.raise_for_status()
        # Warm up (pools, lazy imports), let the exporters finish with the burst, then
        # measure what the processes spend idle.
        wrk(chain_url, duration=2, connections=args.connections, body=CHAIN_BODY, tmp=Path(tmp))
        time.sleep(4)
        idle = idle_rate(system)
        health = [measure(system, ("gateway",), gateway + "/health", None, args, Path(tmp), idle)]
        chain = measure(system, CHAIN, chain_url, CHAIN_BODY, args, Path(tmp), idle)
        health.append(
            measure(system, ("gateway",), gateway + "/health", None, args, Path(tmp), idle)
        )
        mixed = mixed_load(system, args, idle) if args.mixed else None
    unit = Run(
        sum(h.requests for h in health),
        sum(h.seconds for h in health),
        sum(h.non_2xx for h in health),
        {"gateway": sum(h.cpu["gateway"] for h in health)},
    )
    print(
        "  idle CPU ms/s: " + ", ".join(f"{n} {r * 1000:.1f}" for n, r in idle.items()),
        file=sys.stderr,
    )
    return {"chain": chain, "health": unit, **({"mixed": mixed} if mixed else {})}


def _tree_cpu(process: psutil.Process) -> float:
    """CPU seconds of a process and everything under it, the exited and reaped included."""
    total = 0.0
    for member in (process, *process.children(recursive=True)):
        try:
            times = member.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class Start:
    label: str
    wall: float
    cpu: float  # the whole tree of `otel-lab up`
    load: float
    by_child: dict[str, float]  # the children in the table; "supervisor": the rest


def startup(runs: int = 2) -> list[Start]:
    """A first `otel-lab up` on an empty data directory, then ``runs - 1`` more on it."""
    results = []
    with tempfile.TemporaryDirectory(prefix="otel-lab-startup-") as tmp:
        for run in range(runs):
            started = time.monotonic()
            system = start_system(Path(tmp) / "data", env={"OTEL_SDK_DISABLED": "false"})
            wall = time.monotonic() - started
            cpu = _tree_cpu(psutil.Process(system.process.pid))
            by_child = {}
            for name in system.children:
                try:
                    by_child[name] = _tree_cpu(psutil.Process(system.pid(name)))
                except (psutil.Error, ValueError):
                    continue
            root = psutil.Process(system.process.pid)
            for process in root.children():
                with contextlib.suppress(psutil.Error):
                    if "otel_lab.runtime.forkserver" in process.cmdline():
                        times = process.cpu_times()  # its own: its children are listed
                        by_child["fork server"] = times.user + times.system
            by_child["supervisor"] = cpu - sum(by_child.values())  # + initdb, migrations
            load = os.getloadavg()[0]
            system.stop()
            label = "first (empty data dir)" if run == 0 else "again"
            results.append(Start(label, wall, cpu, load, by_child))
    return results


def print_chain(results: dict[str, dict[str, Run]], args) -> None:
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s; CPU = utime+stime from /proc")
    header = (
        f"{'telemetry':9} {'chain req/s':>11} {'CPU ms/req':>10} {'target':>7}"
        + "".join(f" {name[:8]:>8}" for name in CHAIN)
        + f" {'health us':>9} {'x health':>8} {'non-2xx':>7}"
    )
    print(header)
    print("-" * len(header))
    for variant, runs in results.items():
        chain, health = runs["chain"], runs["health"]
        health_ms = health.ms_per_request()
        total = chain.ms_per_request()
        print(
            f"{variant:9} {chain.rps:11.1f} {total:10.2f} {'<=' + str(TARGET_MS[variant]):>7}"
            + "".join(f" {chain.ms_per_request(name):8.2f}" for name in CHAIN)
            + f" {health_ms * 1000:9.0f} {total / health_ms:8.1f}"
            f" {chain.non_2xx + health.non_2xx:7d}"
        )
    mixed = {variant: runs["mixed"] for variant, runs in results.items() if "mixed" in runs}
    if mixed:
        print(f"\nmixed load of `otel-lab load` (every scenario by weight, {args.mixed_concurrency}"
              f" per round, no delay) for {args.duration} s; before: about {MIXED_BEFORE_RPS:.0f}"
              " req/s at saturation")  # fmt: skip
        header = (
            f"{'telemetry':9} {'req/s':>7} {'x before':>8} {'CPU ms/req':>10}"
            + "".join(f" {name[:8]:>8}" for name in MIXED)
            + f" {'unexpected':>10}"
        )
        print(header)
        print("-" * len(header))
        for variant, run in mixed.items():
            print(
                f"{variant:9} {run.rps:7.1f} {run.rps / MIXED_BEFORE_RPS:8.2f}"
                f" {run.ms_per_request():10.2f}"
                + "".join(f" {run.ms_per_request(name):8.2f}" for name in MIXED)
                + f" {run.non_2xx:10d}"
            )
    if "off" in results and "on" in results:
        off_health = results["off"]["health"].ms_per_request()
        on_chain = results["on"]["chain"].ms_per_request()
        print(f"\non: the chain costs {on_chain / off_health:.1f} telemetry-off health requests")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
        help="telemetry variants of the chain to measure (none: only --startup)",
    )  # fmt: skip
    parser.add_argument("--startup", action="store_true", help="also time otel-lab up")
    parser.add_argument(
        "--startup-runs", type=int, default=2,
        help="starts to time: the first on an empty data dir, the rest again on it",
    )  # fmt: skip
    parser.add_argument(
        "--mixed", action=argparse.BooleanOptionalAction, default=True,
        help="also measure the mixed load of `otel-lab load` (default: yes)",
    )  # fmt: skip
    parser.add_argument("--mixed-concurrency", type=int, default=16,
                        help="requests per round of the mixed load")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    starts = []
    if args.startup:
        print("timing otel-lab up ...", file=sys.stderr, flush=True)
        starts = startup(args.startup_runs)
    results: dict[str, dict[str, Run]] = {}
    for variant in args.variants:
        print(f"measuring with telemetry {variant} ...", file=sys.stderr, flush=True)
        results[variant] = bench_variant(VARIANTS[variant], args)

    if results:
        print_chain(results, args)
    for start in starts:
        target = 15 if start.label.startswith("first") else 10
        print(f"otel-lab up, {start.label:22} {start.wall:5.1f} s to all ready (target <= "
              f"{target} s), {start.cpu:5.1f} s CPU in its process tree, load average "
              f"{start.load:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
        print("  CPU s: " + ", ".join(f"{n} {c:.2f}" for n, c in start.by_child.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
