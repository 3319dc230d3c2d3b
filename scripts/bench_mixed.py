"""What the mixed load of ``otel-lab load`` costs: CPU per request over every service and the
worker, for the checkout whose ``otel_lab`` the running Python imports.

It needs only the runtime harness and the load generator, which the issue's baseline
(834d2a0) has too, so the same measurement runs against the old code and the new in the
same minutes (issue 10: compare ratios within such a pair, never across runs):

    .venv/bin/python scripts/bench_mixed.py --label new
    (cd ../baseline && .venv/bin/python ../main/scripts/bench_mixed.py --label old)
    .venv/bin/python scripts/bench_mixed.py --against ../baseline --pairs 3   # both, alternating
    .venv/bin/python scripts/bench_mixed.py --by-scenario     # each scenario alone

``--against DIR`` runs this script under DIR's own venv (``DIR/.venv/bin/python``, so DIR's
``otel_lab``) and under this one, one after the other, ``--pairs`` times, and prints each
pair's ratio of CPU per request (DIR's over this checkout's): the only figure that holds on
a host whose speed drifts from one minute to the next.

It starts the whole system with ``otel-lab up`` (telemetry off, ``OTEL_SDK_DISABLED=true``,
unless ``--telemetry on``), warms it up, measures what each process spends idle, then sends
the mix (every scenario by its weight, ``--concurrency`` per round, no delay) for
``--duration`` seconds from this process and reports the CPU (user + system from
``/proc/<pid>/stat``, idle subtracted) per request. The load generator is not counted;
neither are PostgreSQL, Valkey and the console. ``--by-scenario`` runs each scenario alone
instead and weighs its cost by the mix's weights: where the CPU of the mix goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_seconds

from otel_lab.loadgen.runner import LoadPlan, run
from otel_lab.loadgen.scenarios import SCENARIOS
from otel_lab.runtime.harness import running_system

NAMES = ("gateway", "user-service", "order-service", "audit-service", "api",
         "weather-upstream", "worker")  # fmt: skip


def measure(host: str, pids: dict[str, int], idle: dict[str, float], plan: LoadPlan) -> str:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    report = asyncio.run(run(plan))
    elapsed = time.monotonic() - started
    used = {name: cpu_seconds(pid) - before[name] - idle[name] * elapsed
            for name, pid in pids.items()}  # fmt: skip
    per_request = {name: seconds * 1000 / report.total for name, seconds in used.items()}
    unexpected = sum(stats.unexpected for stats in report.stats.values())
    return (
        f"{report.total / report.elapsed:6.1f} req/s {sum(per_request.values()):6.2f} ms CPU/req "
        + " ".join(f"{name[:6]} {ms:.2f}" for name, ms in per_request.items())
        + f"  unexpected {unexpected}  load {os.getloadavg()[0]:.1f}"
    )


def pairs(against: Path, count: int, common: list[str]) -> None:
    """``count`` pairs: ``against``'s code, then this checkout's, each in a fresh system."""
    sides = (("old", against / ".venv" / "bin" / "python"), ("new", Path(sys.executable)))
    for _ in range(count):
        ms = {}
        for label, python in sides:
            argv = [str(python), __file__, "--label", label, *common]
            line = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
            print(line.strip(), flush=True)
            found = re.search(r"([\d.]+) ms CPU/req", line)
            ms[label] = float(found.group(1)) if found else float("nan")
        ratio = ms["old"] / ms["new"]
        print(f"ratio old/new {ratio:.2f}x  load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this")
    parser.add_argument("--against", type=Path, help="a checkout with its own .venv: pairs")
    parser.add_argument("--pairs", type=int, default=3, help="with --against")
    parser.add_argument("--telemetry", choices=("off", "on"), default="off")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=16, help="requests per round")
    parser.add_argument("--by-scenario", action="store_true", help="each scenario alone")
    args = parser.parse_args()
    if args.against:
        common = ["--telemetry", args.telemetry, "--duration", str(args.duration),
                  "--concurrency", str(args.concurrency)]  # fmt: skip
        pairs(args.against.resolve(), args.pairs, common)
        return
    env = {"LOG_LEVEL": "INFO"}
    env |= {"OTEL_SDK_DISABLED": "true"} if args.telemetry == "off" else {
        "OTEL_TRACES_SAMPLER": "always_on"}  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="otel-lab-mixed-") as tmp,
        running_system(Path(tmp) / "data", env=env) as system,
    ):
        host = system.url("gateway")
        asyncio.run(run(LoadPlan(host=host, concurrency=args.concurrency, delay=0, duration=3)))
        time.sleep(4)  # let the warm-up's tasks and exports finish
        pids = {name: system.pid(name) for name in NAMES}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        time.sleep(4)
        idle = {name: (cpu_seconds(pid) - before[name]) / (time.monotonic() - started)
                for name, pid in pids.items()}  # fmt: skip
        plans = [(args.label, SCENARIOS)]
        if args.by_scenario:
            plans = [(f"{s.name} (weight {s.weight})", (s,)) for s in SCENARIOS]
        for label, scenarios in plans:
            plan = LoadPlan(host=host, concurrency=args.concurrency, delay=0,
                            duration=args.duration, scenarios=scenarios)  # fmt: skip
            print(f"{label:32} {args.telemetry:3} {measure(host, pids, idle, plan)}", flush=True)


if __name__ == "__main__":
    main()
