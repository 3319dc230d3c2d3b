"""Fault figures for docs/reliability.md, and the soak (``make soak``).

    python scripts/faults.py                      # every fault once, then the table
    python scripts/faults.py --only postgres      # the faults whose name contains "postgres"
    python scripts/faults.py --only "PostgreSQL hung" --repeat 5   # one fault, 5 times
    python scripts/faults.py --soak 10            # 10 minutes, one fault a minute

Starts its own ``otel-lab up`` (free ports, a temporary data dir), sends steady traffic
through the gateway and injects the faults of ``tests/faults/lab.py`` one after the other,
for real. The soak (``scripts/soak.py``) also samples the memory of every process of the
system and counts 5xx answers outside the fault windows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_lab.runtime.harness import RunningSystem, running_system
from scripts.soak import soak
from tests.faults.lab import FAULTS, Outcome, Traffic, run_fault, table


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="only the faults whose name contains this")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="run the soak instead")
    parser.add_argument(
        "--warm-up", type=float, default=300.0, help="soak: seconds of traffic before (300)"
    )
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
                soak(system, traffic, args.soak, args.warm_up)
            else:
                print(table(faults(system, traffic, args.only, args.repeat)))
        finally:
            traffic.stop()


if __name__ == "__main__":
    main()
