"""What the client instrumentations cost: the contrib packages against the telemetry package's.

In one process, so the variants are measured within seconds of each other (this host's
speed drifts), batches of requests go through each variant in turn, over many rounds; the
figure is the median CPU time of the process (all threads, the batch export thread and its
encoding included) per request:

- HTTP client: one POST to a trivial uvicorn endpoint in a child process, with aiohttp
  bare and with ``opentelemetry-instrumentation-aiohttp-client``'s trace config, and with
  the services' client (``otel_lab.http_client``) bare and with
  ``otel_lab.telemetry.http_client``'s middleware;
- database: one pool checkout and two ``SELECT 1`` on an embedded PostgreSQL the script
  starts, with no instrumentation, with ``opentelemetry-instrumentation-sqlalchemy``, and
  with ``otel_lab.telemetry.database``;
- cache: one ``GET`` on an embedded Valkey with an asyncio client, bare, with
  ``opentelemetry-instrumentation-redis``'s ``instrument_client``, with
  ``otel_lab.telemetry.redis_client`` (the same spans, which the services use), and with only
  a span of the same attributes started and ended around the call by hand
  (the floor any instrumentation could reach).

Each request runs under a parent span, as in a service; spans go through a batch processor
to a sink that encodes them as the exporter would and drops the bytes; metrics go to an
in-memory reader. The garbage collector is settled as the services settle it.

    .venv/bin/python scripts/bench_instrumentation.py            # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio
import sqlalchemy as sa
from benchlib import trivial_endpoint
from opentelemetry.instrumentation._semconv import (
    _OpenTelemetrySemanticConventionStability,
    _StabilityMode,
)
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from otel_lab.http_client import HTTPClient
from otel_lab.runtime.embedded import embedded_postgres, embedded_valkey
from otel_lab.runtime.harness import free_ports
from otel_lab.telemetry._wire import SpanEncoder
from otel_lab.telemetry.database import instrument_engine
from otel_lab.telemetry.duration import MeterProvider  # the services' (plain histograms)
from otel_lab.telemetry.http_client import client_middleware
from otel_lab.telemetry.redis_client import instrument_client

BODY = b'{"user_id": 1001, "action": "bench"}'
CONCURRENCY = 4
Request = Callable[[], Awaitable[None]]


class _EncodingSink(SpanExporter):
    def __init__(self) -> None:
        self.encoder = SpanEncoder()

    def export(self, spans: Any) -> SpanExportResult:
        self.encoder.encode(spans)
        return SpanExportResult.SUCCESS


def _providers() -> tuple[TracerProvider, MeterProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_EncodingSink(), max_queue_size=8192))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def _under_a_parent(tracer_provider: TracerProvider, call: Request) -> Request:
    tracer = tracer_provider.get_tracer("bench")

    async def request() -> None:
        with tracer.start_as_current_span("request"):
            await call()

    return request


async def _compare(variants: dict[str, Request], rounds: int, batch: int) -> dict[str, float]:
    """Median CPU microseconds per request of each variant, batches interleaved."""

    async def run(call: Request, count: int) -> None:
        async def worker() -> None:
            for _ in range(count // CONCURRENCY):
                await call()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    for call in variants.values():  # warm-up: pools, caches, code paths
        await run(call, batch)
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            started = time.process_time()
            await run(call, batch)
            samples[name].append((time.process_time() - started) / batch * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def http_clients(url: str, rounds: int) -> dict[str, float]:
    contrib_tp, contrib_mp = _providers()
    ours_tp, ours_mp = _providers()
    contrib = create_trace_config(
        tracer_provider=contrib_tp,
        meter_provider=contrib_mp,
        sem_conv_opt_in_mode=_StabilityMode.HTTP,
    )
    ours = client_middleware(ours_tp, ours_mp)
    sessions = {  # name: (session, the provider of its parent span)
        "aiohttp bare": (aiohttp.ClientSession(), contrib_tp),
        "contrib aiohttp-client": (aiohttp.ClientSession(trace_configs=[contrib]), contrib_tp),
    }
    clients = {
        "otel_lab.http_client bare": (HTTPClient(), ours_tp),
        "telemetry.http_client": (HTTPClient(middlewares=(ours,)), ours_tp),
    }

    def post(session: aiohttp.ClientSession) -> Request:
        async def call() -> None:
            async with session.post(url, data=BODY) as response:
                await response.read()

        return call

    def post_ours(client: HTTPClient) -> Request:
        async def call() -> None:
            await client.request("POST", url, body=BODY)

        return call

    variants = {name: _under_a_parent(tp, post(s)) for name, (s, tp) in sessions.items()}
    variants |= {name: _under_a_parent(tp, post_ours(c)) for name, (c, tp) in clients.items()}
    try:
        return await _compare(variants, rounds, batch=400)
    finally:
        for session, _ in sessions.values():
            await session.close()
        for client, _ in clients.values():
            await client.close()


async def databases(url: str, rounds: int) -> dict[str, float]:
    contrib_tp, contrib_mp = _providers()
    ours_tp, ours_mp = _providers()
    engines: dict[str, AsyncEngine] = {
        name: create_async_engine(url, pool_size=CONCURRENCY)
        for name in ("bare", "contrib sqlalchemy", "telemetry.database")
    }
    instrumentor = SQLAlchemyInstrumentor()
    instrumentor.instrument(
        engine=engines["contrib sqlalchemy"].sync_engine,
        tracer_provider=contrib_tp,
        meter_provider=contrib_mp,
        enable_commenter=False,
    )
    instrument_engine(engines["telemetry.database"].sync_engine, ours_tp, ours_mp)
    providers = {
        "bare": contrib_tp,
        "contrib sqlalchemy": contrib_tp,
        "telemetry.database": ours_tp,
    }
    statement = sa.text("SELECT 1")

    def query(engine: AsyncEngine) -> Request:
        async def call() -> None:
            async with engine.connect() as connection:
                await connection.execute(statement)
                await connection.execute(statement)

        return call

    variants = {name: _under_a_parent(providers[name], query(e)) for name, e in engines.items()}
    try:
        return await _compare(variants, rounds, batch=200)
    finally:
        instrumentor.uninstrument()
        for engine in engines.values():
            await engine.dispose()


async def caches(url: str, rounds: int) -> dict[str, float]:
    contrib_tp, _ = _providers()
    ours_tp, _ = _providers()
    clients = {  # name: (client, the provider of its parent span)
        "bare": (redis.asyncio.Redis.from_url(url), contrib_tp),
        "contrib redis": (redis.asyncio.Redis.from_url(url), contrib_tp),
        "telemetry.redis_client": (redis.asyncio.Redis.from_url(url), ours_tp),
        "a span by hand": (redis.asyncio.Redis.from_url(url), ours_tp),
    }
    RedisInstrumentor.instrument_client(clients["contrib redis"][0], tracer_provider=contrib_tp)
    instrument_client(clients["telemetry.redis_client"][0], tracer_provider=ours_tp)
    await clients["bare"][0].set("bench:item", "x" * 200)
    tracer = ours_tp.get_tracer("bench")
    attributes = {
        "db.system.name": "redis",
        "server.address": "127.0.0.1",
        "server.port": 6379,
        "network.transport": "tcp",
        "db.query.text": "GET ?",
        "db.redis.args_length": 2,
    }

    def get(client: redis.asyncio.Redis, by_hand: bool) -> Request:
        async def call() -> None:
            if by_hand:
                span = tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=attributes)
                await client.get("bench:item")
                span.end()
            else:
                await client.get("bench:item")

        return call

    variants = {
        name: _under_a_parent(tp, get(c, by_hand=name == "a span by hand"))
        for name, (c, tp) in clients.items()
    }
    try:
        return await _compare(variants, rounds, batch=400)
    finally:
        for client, _ in clients.values():
            await client.aclose()


def _print(title: str, results: dict[str, float], against: dict[str, str] | None = None) -> None:
    """Each variant's figure and its telemetry cost: against ``bare``, or the variant named
    for it in ``against`` (and none for a variant named there as a baseline)."""
    against = against or {}
    baselines = set(against.values()) | {"bare"}
    print(title)
    for name, micros in results.items():
        base = results[against.get(name, "bare")] if name not in baselines else micros
        extra = "" if name in baselines else f"   telemetry {micros - base:+6.0f} us"
        print(f"  {name:26} {micros:7.0f} us per request{extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    # The contrib packages read the semconv opt-in once: the stable names, as the services.
    stability = _OpenTelemetrySemanticConventionStability
    stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = {}
    stability._initialized = False
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http,database"
    stability._initialize()

    (port,) = free_ports(1)
    with trivial_endpoint(port) as url:
        http = asyncio.run(http_clients(url, args.rounds))
    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp) / "pg") as pg:
        database = asyncio.run(databases(pg.url, args.rounds))
    with tempfile.TemporaryDirectory() as tmp, embedded_valkey(Path(tmp) / "kv") as kv:
        cache = asyncio.run(caches(kv.url, args.rounds))
    print(f"median of {args.rounds} interleaved batches; CPU of this process per request")
    _print(
        "one POST under a parent span:",
        http,
        {
            "contrib aiohttp-client": "aiohttp bare",
            "telemetry.http_client": "otel_lab.http_client bare",
        },
    )
    _print("one pool checkout + two SELECT 1 under a parent span:", database)
    _print("one cache GET under a parent span:", cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
