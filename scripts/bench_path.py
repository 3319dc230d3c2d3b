"""CPU per request of one path through the gateway, in each process that serves it.

Where ``bench_mixed.py`` weighs the whole mix (and drifts by up to 1.5x between runs), this
drives one request shape with wrk, so one hop's saving shows: e.g. the gateway's cost per
proxied request next to the api's for the same ``GET /hello`` (the api's own figure is the
control), or one endpoint's cost before and after a change to it:

    .venv/bin/python scripts/bench_path.py                              # GET /hello
    .venv/bin/python scripts/bench_path.py --path /db-operation
    .venv/bin/python scripts/bench_path.py --path /api/v1/process \\
        --body '{"user_id": 1001, "action": "bench"}' \\
        --processes gateway user-service order-service audit-service

Telemetry off (``OTEL_SDK_DISABLED=true``); wrk -t1 from its own process; CPU is utime +
stime from ``/proc/<pid>/stat`` per request, idle not subtracted (at hundreds of requests
per second it weighs a few microseconds). To compare two checkouts with one venv, run the
other one's code with ``PYTHONPATH=<checkout>/src`` (it wins over the editable install).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchlib import cpu_seconds, wrk

from otel_lab.runtime.harness import running_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/hello")
    parser.add_argument("--body", default=None, help="JSON to POST (default: a GET)")
    parser.add_argument("--processes", nargs="+", default=["gateway", "api"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per round")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    env = {"OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "INFO"}
    with (
        tempfile.TemporaryDirectory(prefix="otel-lab-path-") as tmp,
        running_system(Path(tmp) / "data", env=env) as system,
    ):
        url = system.url("gateway") + args.path
        common = {"connections": args.connections, "tmp": Path(tmp), "body": args.body}
        wrk(url, duration=2, **common)  # warm-up
        pids = {name: system.pid(name) for name in args.processes}
        for _ in range(args.rounds):
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            run = wrk(url, duration=args.duration, **common)
            per = {
                name: (cpu_seconds(pid) - before[name]) * 1e6 / run.requests
                for name, pid in pids.items()
            }
            print(
                " ".join(f"{name} {us:.0f} us" for name, us in per.items()),
                f"| {run.requests / run.seconds:.0f} req/s, non-2xx {run.non_2xx},"
                f" load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
