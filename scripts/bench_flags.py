"""What a fault flag check costs the hot path (issue 11): figures, not assertions.

Every request of every service passes the chaos middleware, which asks
``faults.active("chaos-delay")``; a few routes ask about their own fault. This script
times, in one process, with a real flag file read by OpenFeature's flagd provider (the
in-process resolver, as the services run it):

- ``faults.active(name)`` with the watcher running (the check the services make),
- one OpenFeature evaluation through the flagd provider (what a per-request
  ``client.get_boolean_value`` would cost instead),
- a trivial ASGI app called directly, and the same app behind ``ChaosMiddleware`` with
  the fault off: the per-request cost of the middleware and its check, as a ratio.

CPU time of the process (``time.process_time``, every thread: the watcher's refreshes are
included), median of 5 rounds.

    .venv/bin/python scripts/bench_flags.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUNDS = 5


def per_call_ns(fn: Callable[[], Any], n: int) -> float:
    """Median CPU nanoseconds per call over ROUNDS rounds of ``n`` calls."""
    results = []
    for _ in range(ROUNDS):
        start = time.process_time_ns()
        for _ in range(n):
            fn()
        results.append((time.process_time_ns() - start) / n)
    return statistics.median(results)


def per_request_ns(app: Any, n: int) -> float:
    """Median CPU nanoseconds per ASGI request (one event loop, ``n`` requests a round)."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def many() -> None:
        for _ in range(n):
            await app(scope, receive, send)

    results = []
    for _ in range(ROUNDS):
        start = time.process_time_ns()
        asyncio.run(many())
        results.append((time.process_time_ns() - start) / n)
    return statistics.median(results)


async def bare(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def main() -> None:
    directory = Path(tempfile.mkdtemp())
    os.environ["FLAGD_OFFLINE_FLAG_SOURCE_PATH"] = str(directory / "flags.flagd.json")
    from otel_lab import faults
    from otel_lab.services.chaos import ChaosMiddleware
    from otel_lab.settings import get_settings

    faults.write({"slow-database"}, faults.flags_path(get_settings()))
    faults.active("slow-database")  # starts the watcher
    deadline = time.monotonic() + 10
    while not faults.active("slow-database"):
        assert time.monotonic() < deadline, "the watcher did not read the flag file"
        time.sleep(0.05)

    from openfeature import api

    client = api.get_client("bench")
    assert client.get_boolean_value("slow-database", False) is True

    active = per_call_ns(lambda: faults.active("chaos-delay"), 1_000_000)
    evaluation = per_call_ns(lambda: client.get_boolean_value("chaos-delay", False), 20_000)
    direct = per_request_ns(bare, 100_000)
    chaos = per_request_ns(ChaosMiddleware(bare, get_settings()), 100_000)
    print(f"faults.active(name), watcher running:      {active:8.0f} ns per call")
    print(f"OpenFeature evaluation (flagd in-process): {evaluation:8.0f} ns per call "
          f"({evaluation / active:.0f}x)")  # fmt: skip
    print(f"trivial ASGI app, direct:                  {direct:8.0f} ns per request")
    print(f"  behind ChaosMiddleware, fault off:       {chaos:8.0f} ns per request "
          f"(+{chaos - direct:.0f} ns, {chaos / direct:.2f}x)")  # fmt: skip
    print("for scale: a bare GET /health on a service costs 114,000-170,000 ns of CPU "
          "(docs/performance.md)")  # fmt: skip


if __name__ == "__main__":
    main()
