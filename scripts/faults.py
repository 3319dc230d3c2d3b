"""Fault figures for docs/reliability.md, and the soak (``make soak``).

    python scripts/faults.py                      # every fault once, then the table
    python scripts/faults.py --only postgres      # the faults whose name contains "postgres"
    python scripts/faults.py --only "PostgreSQL hung" --repeat 5   # one fault, 5 times
    python scripts/faults.py --soak 10            # 10 minutes, one fault a minute

Starts its own ``otel-lab up`` (free ports, a temporary data dir), sends steady traffic
through the gateway and injects the faults of ``tests/faults/lab.py`` one after the other,
for real. The soak also samples the RSS of every process of the system and counts 5xx
answers outside the fault windows.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_lab.runtime.harness import RunningSystem, running_system
from tests.faults.lab import FAULTS, Outcome, Traffic, run_fault, table


def rss_by_child(system: RunningSystem) -> dict[str, float]:
    """MiB per child (the child and its descendants: PostgreSQL's backends, Celery's pool)."""
    system.refresh()
    sizes: dict[str, float] = {}
    for name, child in system.children.items():
        try:
            root = psutil.Process(int(child["pid"]))
            procs = [root, *root.children(recursive=True)]
            sizes[name] = sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.Error:
            continue
    return sizes


def faults(
    system: RunningSystem, traffic: Traffic, only: str | None, repeat: int = 1
) -> list[Outcome]:
    outcomes = []
    for fault in [f for _ in range(repeat) for f in FAULTS]:
        if only and only.lower() not in fault.name.lower():
            continue
        print(f"-- {fault.name}", flush=True)
        outcome = run_fault(system, traffic, fault)
        for line in outcome.violations()[:5]:
            print(f"   violation: {line}")
        outcomes.append(outcome)
    return outcomes


def calibrate(traffic: Traffic, share: float = 0.7, seconds: float = 15.0) -> None:
    """Set the traffic's pause so it sends about ``share`` of the rate it reaches with none.

    The probes are closed loops (a thread waits for each answer), so without pauses they
    saturate what the system can serve on this machine; each thread's rate is
    1 / (latency + pause), hence the pause for ``share`` of it."""
    traffic.pause = 0.0
    time.sleep(2)  # let the threads pick up the new pause
    start = time.monotonic()
    time.sleep(seconds)
    sample = traffic.between(start, time.monotonic())
    threads = traffic.thread_count
    rate = len(sample) / seconds
    latency = sum(r.elapsed for r in sample) / max(1, len(sample))
    traffic.pause = max(0.0, threads / (share * rate) - latency)
    print(f"saturation: {rate:.0f} req/s (mean latency {latency * 1000:.0f} ms); "
          f"soak at {share:.0%}: pause {traffic.pause * 1000:.0f} ms per thread")  # fmt: skip


def soak(system: RunningSystem, traffic: Traffic, minutes: float) -> None:
    """One fault a minute (the next of the table each time), RSS sampled every 10 s."""
    calibrate(traffic)
    samples: list[tuple[float, dict[str, float]]] = [(0.0, rss_by_child(system))]
    started = time.monotonic()
    end = started + minutes * 60
    windows: list[tuple[float, float]] = []
    outcomes: list[Outcome] = []
    for fault in itertools.cycle(FAULTS):
        minute_start = time.monotonic()
        if minute_start >= end:
            break
        print(f"-- {time.monotonic() - started:5.0f} s: {fault.name}", flush=True)
        outcome = run_fault(system, traffic, fault)
        outcomes.append(outcome)
        windows.append((outcome.injected, (outcome.recovered or outcome.healed) + 0.5))
        while time.monotonic() < min(minute_start + 60, end):
            samples.append((time.monotonic() - started, rss_by_child(system)))
            time.sleep(10)
    results = traffic.between(started, time.monotonic())
    # A request in flight at any moment of a fault's window counts as inside it (one sent
    # just before a kill reaches the killed process just after it).
    outside = [
        r
        for r in results
        if r.status >= 500 and not any(r.start <= b and r.end >= a for a, b in windows)
    ]
    print(table(outcomes))
    queue = redis.Redis.from_url(system.redis_url, socket_timeout=2).llen("celery")
    print(f"\ntasks still queued at the end: {queue}")
    rate = len(results) / (time.monotonic() - started)
    print(f"\nrequests: {len(results)} ({rate:.1f}/s), 5xx outside fault windows: {len(outside)}")
    for r in outside[:10]:
        print(f"   {r.probe} {r.status} {r.body!r:.160}")
    if samples:
        first, last = samples[0][1], samples[-1][1]
        print("\n| process | RSS first (MiB) | RSS last (MiB) | change |\n|---|---:|---:|---:|")
        for name in sorted(first):
            if name in last and first[name]:
                change = (last[name] - first[name]) / first[name] * 100
                print(f"| {name} | {first[name]:.0f} | {last[name]:.0f} | {change:+.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="only the faults whose name contains this")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="run the soak instead")
    parser.add_argument("--repeat", type=int, default=1, help="do the faults this many times")
    parser.add_argument(
        "--pause", type=float, default=0.2, help="seconds between a probe's requests (0.2)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keep data and logs here (default: a temp dir)"
    )
    args = parser.parse_args()
    env = {"PENDING_SWEEP_SECONDS": "2"}
    with (
        tempfile.TemporaryDirectory(prefix="otel-lab-faults-") as tmp,
        running_system(args.data_dir or Path(tmp), env=env) as system,
    ):
        traffic = Traffic(system, pause=args.pause).start()
        try:
            if args.soak:
                soak(system, traffic, args.soak)
            else:
                print(table(faults(system, traffic, args.only, args.repeat)))
        finally:
            traffic.stop()


if __name__ == "__main__":
    main()
