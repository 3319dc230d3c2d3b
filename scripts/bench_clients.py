"""What one service-to-service call costs the caller: httpx versus aiohttp, bare and traced.

Starts a trivial uvicorn endpoint in a child process, then sends ``--calls`` POSTs (8 at a
time, keep-alive) with each client in this process and prints this process's CPU time per
call. The server's CPU is not counted: only the client differs.

    .venv/bin/python scripts/bench_clients.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx
from benchlib import trivial_endpoint
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_lab.runtime.harness import free_ports
from otel_lab.services.downstream import create_client
from otel_lab.settings import get_settings
from otel_lab.telemetry import Telemetry

BODY = b'{"user_id": 1001, "action": "bench"}'
CONCURRENCY = 8


async def run(name: str, url: str, calls: int) -> float:
    """CPU microseconds per call for one client."""
    traced = name.endswith("traced")
    if name.startswith("httpx"):
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        if traced:
            HTTPXClientInstrumentor.instrument_client(client)

        async def one() -> None:
            response = await client.post(url, content=BODY, timeout=5)
            response.raise_for_status()

        close = client.aclose
    else:
        # the services' own client, traced to the global provider or not at all
        session = create_client(get_settings(), Telemetry(enabled=traced))

        async def one() -> None:
            async with session.post(url, data=BODY) as response:
                await response.read()
                response.raise_for_status()

        close = session.close

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(20) for _ in range(CONCURRENCY)))  # warm-up
    started = time.process_time()
    await asyncio.gather(*(worker(calls // CONCURRENCY) for _ in range(CONCURRENCY)))
    cpu = time.process_time() - started
    await close()
    return cpu / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    (port,) = free_ports(1)
    with trivial_endpoint(port) as url:
        results = {}
        for name in ("httpx", "aiohttp"):
            os.environ["OTEL_SDK_DISABLED"] = "true"
            results[name] = asyncio.run(run(name, url, args.calls))
        trace.set_tracer_provider(TracerProvider())  # spans made, not exported
        for name in ("httpx", "aiohttp"):
            os.environ["OTEL_SDK_DISABLED"] = "false"
            results[f"{name} traced"] = asyncio.run(run(f"{name} traced", url, args.calls))
    print(f"{args.calls} POSTs, {CONCURRENCY} at a time, keep-alive; CPU of the calling process")
    for name, micros in results.items():
        print(f"  {name:16} {micros:7.0f} us per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
