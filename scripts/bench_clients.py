"""What one service-to-service call costs the caller: httpx, aiohttp and the services' own
client (``otel_lab.http_client``), bare and traced.

Starts a trivial uvicorn endpoint in a child process, then sends ``--calls`` POSTs
(keep-alive; one at a time, as a service under light load makes them, and 8 at a time)
with each client in this process and prints this process's CPU time per call. The server's
CPU is not counted: only the client differs. Traced: httpx and aiohttp with their contrib
instrumentations, ours with ``telemetry.http_client``, all to a provider that makes spans
and exports none.

    .venv/bin/python scripts/bench_clients.py
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from benchlib import trivial_endpoint
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_lab.http_client import HTTPClient
from otel_lab.runtime.harness import free_ports
from otel_lab.telemetry.http_client import client_middleware

BODY = b'{"user_id": 1001, "action": "bench"}'
CLIENTS = ("httpx", "aiohttp", "otel_lab.http_client")

Call = Callable[[], Awaitable[None]]


def _client(name: str, url: str, provider: TracerProvider | None) -> tuple[Call, Call]:
    """One POST with the client ``name`` (traced to ``provider`` unless None), and its close."""
    if name == "httpx":
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        if provider is not None:
            HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)

        async def post_httpx() -> None:
            (await client.post(url, content=BODY, timeout=5)).raise_for_status()

        return post_httpx, client.aclose
    if name == "aiohttp":
        configs = [] if provider is None else [create_trace_config(tracer_provider=provider)]
        session = aiohttp.ClientSession(trace_configs=configs)

        async def post_aiohttp() -> None:
            async with session.post(url, data=BODY) as response:
                await response.read()
                response.raise_for_status()

        return post_aiohttp, session.close
    ours = HTTPClient(middlewares=() if provider is None else (client_middleware(provider),))

    async def post_ours() -> None:
        assert (await ours.request("POST", url, body=BODY)).status_code == 200

    return post_ours, ours.close


async def run(name: str, url: str, calls: int, concurrency: int, traced: bool) -> float:
    """CPU microseconds per call for one client."""
    one, close = _client(name, url, TracerProvider() if traced else None)

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(20) for _ in range(concurrency)))  # warm-up
    started = time.process_time()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    cpu = time.process_time() - started
    await close()
    return cpu / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    (port,) = free_ports(1)
    print(f"{args.calls} POSTs per figure, keep-alive; CPU of the calling process per call")
    print(f"  {'client':28} {'1 at a time':>12} {'8 at a time':>12}")
    with trivial_endpoint(port) as url:
        for traced in (False, True):
            for name in CLIENTS:
                figures = [
                    asyncio.run(run(name, url, args.calls, concurrency, traced))
                    for concurrency in (1, 8)
                ]
                label = f"{name} traced" if traced else name
                print(f"  {label:28} " + " ".join(f"{us:9.0f} us" for us in figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
