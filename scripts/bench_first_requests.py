"""What the first requests after `otel-lab up` cost: the time to ready, then the latency of
the first chain requests through the gateway (each hop's first database work and first
call to the next hop) against the same requests once warm.

    .venv/bin/python scripts/bench_first_requests.py --runs 3

Each run starts `otel-lab up --no-traffic` on the same data directory (the first run
initialises it and is not counted), sends ``--first`` chain requests one after the other as
soon as the table is printed, then ``--warm`` more, and stops it. Also prints how long
each service's start-up (uvicorn's lifespan: what it opens, and the pool's warm-up) took,
from its log. Prints the figures of docs/reliability.md ("Ready means warm").
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from otel_lab.registry import API, AUDIT, ORDERS, USERS
from otel_lab.runtime.harness import RunningSystem, start_system

CHAIN = ("POST", "/api/v1/process")
_LIFESPAN = ("Waiting for application startup.", "Application startup complete.")


def lifespan_ms(system: RunningSystem, name: str) -> float:
    """From uvicorn's "Waiting for application startup." to "... complete." in its log."""
    times = {}
    for line in system.log(name).splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("message") in _LIFESPAN:
            times[record["message"]] = datetime.fromisoformat(record["timestamp"])
    return (times[_LIFESPAN[1]] - times[_LIFESPAN[0]]).total_seconds() * 1000


def chains(client: httpx.Client, count: int, first_user: int) -> list[tuple[float, int]]:
    """(seconds, status) of ``count`` chain requests, one after the other."""
    results = []
    for n in range(count):
        body = {"user_id": 1001 + (first_user + n) % 10, "action": "load"}
        started = time.monotonic()
        status = client.request(*CHAIN, json=body).status_code
        results.append((time.monotonic() - started, status))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--first", type=int, default=3)
    parser.add_argument("--warm", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="otel-lab-first-") as tmp:
        data = Path(tmp) / "data"
        start_system(data).stop()  # initialise the data directory; not counted
        for run in range(args.runs):
            started = time.monotonic()
            system = start_system(data)
            ready = time.monotonic() - started
            lifespans = {s.name: lifespan_ms(system, s.name) for s in (API, USERS, ORDERS, AUDIT)}
            try:
                with httpx.Client(base_url=system.url("gateway"), timeout=10) as client:
                    first = chains(client, args.first, 0)
                    warm = chains(client, args.warm, args.first)
            finally:
                system.stop()
            shown = ", ".join(f"{s * 1000:.0f} ms ({code})" for s, code in first)
            median = statistics.median(s for s, _ in warm) * 1000
            starts = ", ".join(f"{name} {ms:.0f}" for name, ms in lifespans.items())
            print(f"run {run + 1}: ready in {ready:.1f} s (lifespans, ms: {starts}); first "
                  f"chains {shown}; then median {median:.0f} ms of {args.warm}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
