"""What the console spends per span it ingests, in one process: decode and write.

``make bench`` reports the console's CPU per span ingested in the running system; this
script takes sockets and threads away and times the two steps of the ingest path on
export requests shaped like the services' own: each request is 512 (``--spans``) server
spans of
``GET /health`` (11 attributes, one span per trace, the shape the trivial benchmark
sends), made by the telemetry middleware on the official SDK and encoded by the
services' exporter. It reports CPU microseconds per span (process time, medians of a few
rounds) for decoding (``receiver._decode``) and for writing (``Writer.write``, one
transaction per request, into a fresh SQLite store).

    .venv/bin/python scripts/bench_ingest.py
    .venv/bin/python scripts/bench_ingest.py --grow 8 --per-transaction 4

``--grow N`` writes the same requests N times over (with fresh trace ids) into one store
and prints the writer's user and system CPU per span as the store grows: on a store of
some size each commit writes a page per span to each random-keyed B-tree (the span and
trace ids), which a fresh store hides; ``--per-transaction`` commits that many requests
at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def export_bodies(count: int, per_request: int = 512) -> list[bytes]:
    """``count`` OTLP/HTTP protobuf bodies of ``per_request`` server spans each."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_lab.telemetry._wire import SpanEncoder
    from otel_lab.telemetry.middleware import TelemetryMiddleware
    from otel_lab.telemetry.setup import build_resource

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=build_resource("api"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    class Route:
        path = "/health"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})

    middleware = TelemetryMiddleware(app, tracer_provider=provider, service_name="api")

    async def drive(n: int) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            pass

        for i in range(n):
            scope = {
                "type": "http", "method": "GET", "path": "/health", "scheme": "http",
                "http_version": "1.1", "query_string": b"",
                "client": ("127.0.0.1", 40000 + i % 8), "server": ("127.0.0.1", 8000),
                "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk/4.2.0")],
            }  # fmt: skip
            await middleware(scope, receive, send)

    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        asyncio.run(drive(count * per_request))
    spans = exporter.get_finished_spans()
    encoder = SpanEncoder()
    return [encoder.encode(spans[i : i + per_request]) for i in range(0, len(spans), per_request)]


def measure(bodies: list[bytes], per_request: int, db_path: Path) -> tuple[float, float]:
    """CPU us per span: decoding all bodies, then writing each as one transaction."""
    from otel_lab.console.receiver import _decode
    from otel_lab.console.store.schema import open_writer
    from otel_lab.console.store.writer import StoreStats, Writer

    spans = len(bodies) * per_request
    started = time.process_time()
    batches = [_decode("traces", body, "", "proto") for body in bodies]
    decoded = time.process_time()
    writer = Writer(open_writer(db_path), StoreStats())
    opened = time.process_time()
    for batch in batches:
        writer.write([batch])
    written = time.process_time()
    assert writer.stats.spans_written == spans, writer.stats
    return (decoded - started) / spans * 1e6, (written - opened) / spans * 1e6


def grow(bodies: list[bytes], per_request: int, rounds: int, per_transaction: int) -> None:
    """The writer's CPU per span, round by round, as one store grows."""
    import os
    import resource

    from otel_lab.console.receiver import _decode
    from otel_lab.console.store.schema import open_writer
    from otel_lab.console.store.writer import StoreStats, Writer

    with tempfile.TemporaryDirectory(prefix="otel-lab-ingest-") as tmp:
        path = Path(tmp) / "store.db"
        writer = Writer(open_writer(path), StoreStats())
        for n in range(rounds):
            batches = [_decode("traces", body, "", "proto") for body in bodies]
            for batch in batches:  # new traces each round
                batch.spans[:] = [s._replace(trace_id=os.urandom(16)) for s in batch.spans]
                batch.red_attributes.clear()
            before = resource.getrusage(resource.RUSAGE_SELF)
            for i in range(0, len(batches), per_transaction):
                writer.write(batches[i : i + per_transaction])
            after = resource.getrusage(resource.RUSAGE_SELF)
            spans = len(batches) * per_request
            user = (after.ru_utime - before.ru_utime) / spans * 1e6
            system = (after.ru_stime - before.ru_stime) / spans * 1e6
            print(
                f"  round {n + 1}: store {path.stat().st_size / 2**20:4.0f} MB, write user"
                f" {user:5.1f} + system {system:5.1f} = {user + system:5.1f} us per span"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20, help="export requests per round")
    parser.add_argument(
        "--spans", type=int, default=512, help="spans per request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)"
    )
    parser.add_argument("--grow", type=int, default=0, help="rounds into one growing store")
    parser.add_argument("--per-transaction", type=int, default=1, help="requests per commit")
    args = parser.parse_args()
    bodies = export_bodies(args.requests, args.spans)
    if args.grow:
        print(
            f"{args.grow} rounds of {args.requests} requests x {args.spans} server spans into"
            f" one store, {args.per_transaction} request(s) per transaction:"
        )
        grow(bodies, args.spans, args.grow, args.per_transaction)
        return 0
    size = sum(map(len, bodies)) / len(bodies) / args.spans
    decode, write = [], []
    with tempfile.TemporaryDirectory(prefix="otel-lab-ingest-") as tmp:
        for n in range(args.rounds):
            d, w = measure(bodies, args.spans, Path(tmp) / f"store-{n}.db")
            decode.append(d)
            write.append(w)
    print(
        f"{args.rounds} rounds of {args.requests} requests x {args.spans} server spans"
        f" ({size:.0f} bytes per span on the wire); CPU us per span, medians:"
    )
    print(f"  decode {statistics.median(decode):6.1f}   ({', '.join(f'{x:.1f}' for x in decode)})")
    print(f"  write  {statistics.median(write):6.1f}   ({', '.join(f'{x:.1f}' for x in write)})")
    print(f"  total  {statistics.median(decode) + statistics.median(write):6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
