"""Where a request's CPU goes in each service, and what telemetry adds to it: py-spy
(``record --gil``) on every service a request crosses, under wrk, with telemetry on and off.

For each variant it starts a whole system (the harness), drives one request shape through
the gateway with wrk while py-spy samples each service, and turns the samples into
microseconds per request (samples / rate / requests). Then, per service, the frames whose
inclusive cost differs most between "on" and "off": what telemetry adds, frame by frame.
Sampling slows the services (py-spy stops them to read their stacks), so the absolute
figures are inflated, about equally in both variants; read the differences and shares, and
take the CPU per request of record from ``make bench``.

    .venv/bin/python scripts/profile_chain.py                        # the chain, on and off
    .venv/bin/python scripts/profile_chain.py --path /items/1 --services api --keep /tmp/prof
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import wrk

from otel_lab.runtime.harness import running_system

CHAIN = ("gateway", "user-service", "order-service", "audit-service")
CHAIN_BODY = '{"user_id": 1001, "action": "bench"}'
VARIANTS = {"on": {}, "off": {"OTEL_SDK_DISABLED": "true"}}


def profile(
    variant: str, path: str, services: tuple[str, ...], seconds: int, rate: int, out: Path
) -> int:
    """Run one variant; py-spy's raw stacks go to ``out/<variant>-<service>.txt``. Returns
    the number of requests wrk completed while sampling."""
    body = CHAIN_BODY if path == "/api/v1/process" else None
    with (
        tempfile.TemporaryDirectory() as data,
        running_system(Path(data), env=VARIANTS[variant]) as system,
    ):
        url = system.url("gateway") + path
        wrk(url, duration=3, connections=8, tmp=Path(data), body=body)  # warm up
        spies = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record", "--gil", "--nonblocking", "-r", str(rate), "-d", str(seconds),
                    "-f", "raw", "-o", str(out / f"{variant}-{service}.txt"),
                    "-p", str(system.pid(service)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for service in services
        ]  # fmt: skip
        time.sleep(1)  # py-spy attached
        result = wrk(url, duration=seconds - 2, connections=8, tmp=Path(data), body=body)
        for spy in spies:
            spy.wait()
        return result.requests


def us_per_frame(raw: Path, rate: int, requests: int) -> tuple[dict[str, float], float]:
    """Inclusive microseconds per request of each frame (a frame counted once per stack),
    and of the whole process (every thread)."""
    samples: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            samples[frame] += int(count)
    scale = 1e6 / rate / max(requests, 1)
    return {frame: n * scale for frame, n in samples.items()}, total * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/api/v1/process", help="sent to the gateway")
    parser.add_argument("--services", nargs="+", default=list(CHAIN))
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw output here")
    parser.add_argument(
        "--reuse", nargs=2, type=int, metavar=("ON", "OFF"),
        help="analyse --keep's output again, given the requests of that run (on, off)",
    )  # fmt: skip
    args = parser.parse_args()

    if args.reuse and not args.keep:
        parser.error("--reuse reads the output an earlier run left in --keep")
    out = args.keep or Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    services = tuple(args.services)
    if args.reuse:  # the raw output of an earlier run in --keep, and its request counts
        requests = dict(zip(VARIANTS, args.reuse, strict=True))
    else:
        requests = {
            variant: profile(variant, args.path, services, args.seconds, args.rate, out)
            for variant in VARIANTS
        }
    print(
        f"{args.path}: {requests['on']} requests on, {requests['off']} off, in {args.seconds - 2} s"
    )
    for service in services:
        (on, total_on), (off, total_off) = (
            us_per_frame(out / f"{v}-{service}.txt", args.rate, requests[v]) for v in VARIANTS
        )
        print(f"\n{service}: {total_on:.0f} us on, {total_off:.0f} us off per request")
        # The frames that exist only with telemetry on, by their cost: the outermost of them
        # are where telemetry's work starts (an outer one includes what it wraps: the
        # client middleware's ``await handler(request)`` is the rest of the HTTP call).
        print(f"{'us':>8}  frame")
        only_on = sorted((f for f in on if f not in off), key=on.__getitem__, reverse=True)
        for frame in only_on[: args.top]:
            print(f"{on[frame]:8.0f}  {frame}")


if __name__ == "__main__":
    main()
