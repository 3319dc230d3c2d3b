"""CPU per span of the direct OTLP encoder (``otel_lab.telemetry._wire``), and optionally
of another checkout's version of it, alternated round by round in this one process.

The spans are what a chain request exports: a SERVER span with the middleware's attributes
(high-cardinality ``url.path`` and request ID included), a Postgres CLIENT span with the
stable database conventions, an HTTP CLIENT span and an INTERNAL span, in batches of 2048
(what the services export per request). Each round encodes on a thread of its own, as the
batch processor's export thread does: CPU time of that thread per span (the minimum over
rounds is the figure least disturbed by other load on a shared machine), and its minor page
faults per span (fresh memory the kernel maps on first touch, about 3.5 us each on this
kind of VM; a body built by copying nested buffers took them on every export).

    .venv/bin/python scripts/bench_wire.py
    .venv/bin/python scripts/bench_wire.py --against 8c06e06   # a git revision of this repo
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_lab.telemetry import _wire

HERE = Path(__file__).resolve().parent.parent
BATCH = 2048  # the services' OTEL_BSP_MAX_EXPORT_BATCH_SIZE default (telemetry/setup.py)


def chain_spans(count: int) -> list[ReadableSpan]:
    """``count`` spans, a quarter of each kind a chain request records."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "order-service", "service.instance.id": "host-1-abcd"}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    http = provider.get_tracer("otel_lab.http")
    db = provider.get_tracer("otel_lab.database")
    client = provider.get_tracer("otel_lab.http_client")
    internal = provider.get_tracer("otel_lab.services.orders")
    for i in range(count // 4):
        server_attributes = {
            "http.request.method": "POST",
            "url.scheme": "http",
            "url.path": f"/orders/{i}",
            "http.route": "/orders/{order_id}",
            "server.address": "127.0.0.1",
            "server.port": 8002,
            "network.protocol.version": "1.1",
            "user_agent.original": "python-httpx/0.28.1",
            "request.id": str(uuid.uuid4()),
            "http.response.status_code": 201,
        }
        with (
            http.start_as_current_span(
                "POST /orders/{order_id}", kind=SpanKind.SERVER, attributes=server_attributes
            ),
            internal.start_as_current_span("create_order", attributes={"order.items": 3}),
        ):
            db.start_span(
                "INSERT orders",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system.name": "postgresql",
                    "db.namespace": "otel_lab",
                    "db.operation.name": "INSERT",
                    "db.collection.name": "orders",
                    "db.query.text": "INSERT INTO orders (user_id, total) VALUES ($1, $2)",
                    "server.address": "127.0.0.1",
                    "server.port": 5432,
                },
            ).end()
            client.start_span(
                "POST",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": "POST",
                    "url.full": "http://127.0.0.1:8003/audit",
                    "server.address": "127.0.0.1",
                    "server.port": 8003,
                    "http.response.status_code": 201,
                },
            ).end()
    return list(exporter.get_finished_spans())


def module_at(revision: str) -> ModuleType:
    """``_wire.py`` as it is at ``revision`` of this repository, imported under its own name."""
    source = subprocess.run(
        ["git", "-C", str(HERE), "show", f"{revision}:src/otel_lab/telemetry/_wire.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "wire_against.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("wire_against", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wire_against"] = module
    spec.loader.exec_module(module)
    return module


def per_span(encode: object, batches: list[list[ReadableSpan]]) -> tuple[float, float]:
    """(us of CPU, minor page faults) per span, encoding every batch on a new thread."""
    found: list[tuple[float, float]] = []

    spans = sum(map(len, batches))

    def run() -> None:
        faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        started = time.thread_time()
        for batch in batches:
            encode(batch)  # type: ignore[operator]
        cpu = time.thread_time() - started
        faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults
        found.append((cpu / spans * 1e6, faults / spans))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a git revision whose _wire.py to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--official", action="store_true", help="also the official encoder")
    args = parser.parse_args()

    spans = chain_spans(BATCH * args.batches)
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    encoders = {"this checkout": _wire.SpanEncoder().encode}
    if args.against:
        encoders[args.against] = module_at(args.against).SpanEncoder().encode
    if args.official:
        encoders["official"] = lambda batch: encode_spans(batch).SerializeToString()
    for encode in encoders.values():  # warm the caches, as a long-running exporter's are
        encode(batches[0])
    figures: dict[str, list[float]] = {name: [] for name in encoders}
    faults: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, encode in encoders.items():
            cpu, minor = per_span(encode, batches)
            figures[name].append(cpu)
            faults[name].append(minor)
    print(f"us of CPU per span, {len(spans)} spans in batches of {BATCH}, {args.rounds} rounds")
    for name, values in figures.items():
        print(
            f"  {name:>14}: min {min(values):6.2f}  median {statistics.median(values):6.2f}"
            f"  minor faults per span {statistics.median(faults[name]):.3f}"
        )
    if args.against:
        this, other = (min(figures[n]) for n in ("this checkout", args.against))
        print(f"  this / {args.against}: {this / other:.2f}x (minimums)")


if __name__ == "__main__":
    main()
