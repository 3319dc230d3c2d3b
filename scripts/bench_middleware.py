"""Where a traced request's microseconds go: the telemetry middleware in-process.

``make bench`` measures whole services; this script takes the service away and drives the
telemetry middleware around a trivial ASGI app in one process, so the per-request cost of
telemetry shows without uvicorn, sockets or wrk in the figures (CPU time of the process,
all threads, the batch export threads included). It compares:

- no telemetry (the bare app),
- the telemetry package as it was before this work (commit 834d2a0, read from git),
- the telemetry package as it is,

each in a fresh interpreter, in alternation over a few rounds (medians), and then times
the parts one by one. Exports go to an in-process sink that encodes each batch exactly as
the exporter would (the official protobuf encoder before, the direct one now) and drops it.

    .venv/bin/python scripts/bench_middleware.py            # about a minute
    .venv/bin/python scripts/bench_middleware.py --ablate   # each piece's cost in the loop
    .venv/bin/python scripts/bench_middleware.py --against main --rounds 6  # a change's saving
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BEFORE_COMMIT = "834d2a0"
QUEUE = 1 << 17
GC_YOUNG_THRESHOLD = 10_000  # otel_lab.gc_tuning's
VARIANTS = ("none", "before", "after")
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- one variant


def _extract(commit: str, directory: Path, name: str) -> None:
    """The telemetry package of ``commit`` as ``<name>.telemetry`` (``otel_lab`` otherwise)."""
    package = directory / name
    (package / "telemetry").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    files = subprocess.run(
        ["git", "ls-tree", "--name-only", commit, "src/otel_lab/telemetry/"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for path in files:
        if not path.endswith(".py"):
            continue
        source = subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout  # fmt: skip
        source = source.replace("otel_lab.telemetry", f"{name}.telemetry")
        if path.endswith("/metrics.py"):  # its metrics unregistered: the names are taken
            source = source.replace(
                "from prometheus_client import Counter, Gauge, Histogram,",
                "from functools import partial\n"
                "import prometheus_client as pc\n"
                "Counter, Gauge, Histogram = (partial(m, registry=None) for m in (\n"
                "    pc.Counter, pc.Gauge, pc.Histogram\n"
                "))\n"
                "from prometheus_client import CollectorRegistry,",
            ).replace("REGISTRY.register(", "CollectorRegistry().register(")
        (package / "telemetry" / Path(path).name).write_text(source)


def _providers(
    encode_spans: Callable[[Any], Any],
    encode_logs: Callable[[Any], Any],
    meter_provider_class: Any = None,
) -> Any:
    """Global tracer, meter and logger providers exporting to sinks that encode and drop
    (the meter provider: the package's, if it has one, else the SDK's)."""
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
    )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from otel_lab.telemetry.setup import build_resource

    class SpanSink(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            encode_spans(spans)
            return SpanExportResult.SUCCESS

    class LogSink(LogRecordExporter):
        def export(self, batch: Any) -> LogRecordExportResult:
            encode_logs(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    resource = build_resource("bench")
    tracer_provider = TracerProvider(resource=resource)
    # A queue that holds a whole run: a tight loop outpaces the export thread, and a full
    # queue would drop spans (and their encoding) from the figure.
    tracer_provider.add_span_processor(
        BatchSpanProcessor(SpanSink(), max_queue_size=QUEUE, max_export_batch_size=2048)
    )
    trace.set_tracer_provider(tracer_provider)
    meter_provider_class = meter_provider_class or MeterProvider
    metrics.set_meter_provider(meter_provider_class(metric_readers=[InMemoryMetricReader()]))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(LogSink(), max_queue_size=QUEUE)
    )
    set_logger_provider(logger_provider)
    return tracer_provider, logger_provider


def _middleware(variant: str, tmp: Path) -> tuple[Any, Callable[[], None]]:
    """The ASGI app to drive, and a flush for the end of the measurement."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = _Route
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})

    if variant == "none":
        return app, lambda: None
    if variant == "before":
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.instrumentation.logging.handler import LoggingHandler

        _extract(BEFORE_COMMIT, tmp, "otel_lab_before")
        sys.path.insert(0, str(tmp))
        from otel_lab_before.telemetry.logs import configure_logging  # type: ignore[import-not-found]
        from otel_lab_before.telemetry.middleware import (  # type: ignore[import-not-found]
            TelemetryMiddleware as Before,
        )

        tracer_provider, logger_provider = _providers(
            lambda spans: encode_spans(spans).SerializePartialToString(),
            lambda logs: encode_logs(logs).SerializeToString(),
        )
        configure_logging("bench", "INFO", LoggingHandler(logger_provider=logger_provider))
        middleware = Before(app)
    else:  # "after", or "against": the package at the commit given with --against
        package = "otel_lab"
        if variant == "against":
            _extract(os.environ["BENCH_AGAINST"], tmp, "otel_lab_against")
            sys.path.insert(0, str(tmp))
            package = "otel_lab_against"
        wire = importlib.import_module(f"{package}.telemetry._wire")
        logs = importlib.import_module(f"{package}.telemetry.logs")
        try:  # the package's MeterProvider, since the duration is kept in plain numbers
            meters = importlib.import_module(f"{package}.telemetry.duration").MeterProvider
        except ModuleNotFoundError:
            meters = None
        tracer_provider, logger_provider = _providers(
            wire.SpanEncoder().encode, wire.LogEncoder().encode, meters
        )
        logs.configure_logging("bench", "INFO", logs.OTLPHandler(logger_provider=logger_provider))
        middleware = importlib.import_module(f"{package}.telemetry.middleware").TelemetryMiddleware(
            app
        )

    def flush() -> None:
        tracer_provider.force_flush()
        logger_provider.force_flush()

    return middleware, flush


class _Route:
    path = "/health"


_HEADERS = [(b"content-type", b"application/json")]


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/health",
        "scheme": "http",
        "http_version": "1.1",
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk/4.2.0")],
    }


# The pieces of a traced request that --ablate switches off one at a time, inside the
# request loop (the services' figure), where a piece costs more than timed on its own:
# between two calls the rest of the request pushes its code and data out of the caches.
ABLATIONS = {
    "as shipped": (),
    "without the server span (no-op tracer: no span, export, exemplar, traceresponse)": (
        "span",
    ),
    "without the OTel http.server.request.duration record": ("histogram",),
    "without the Prometheus series (requests_total, request_latency_seconds)": ("prometheus",),
    "without the access line": ("access",),
    "the middleware's own work (all of the above off)": (
        "span", "histogram", "prometheus", "access",
    ),
}  # fmt: skip


def _ablate(middleware: Any, pieces: tuple[str, ...]) -> None:
    """Switch ``pieces`` of the middleware off (after it is built: the rest is unchanged)."""
    from opentelemetry import trace

    def nothing(*args: object, **kwargs: object) -> None:
        return None

    class Nothing:
        inc = dec = observe = staticmethod(nothing)

    if "span" in pieces:
        middleware.tracer = trace.NoOpTracer()
    if "histogram" in pieces:
        middleware.duration = Nothing
        middleware.duration.record = nothing
    if "prometheus" in pieces:
        middleware._series = lambda *args: ([0], Nothing)
    if "access" in pieces:
        middleware.access_log.write = nothing


def _settle_garbage_collector() -> None:
    """What every service does once it is up (services/base.py), so the figures match."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run_variant(variant: str, requests: int, ablate: tuple[str, ...] = ()) -> float:
    """CPU microseconds per request of ``variant`` (all threads of this process)."""
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "1000"
    os.environ["OTEL_BLRP_SCHEDULE_DELAY"] = "1000"
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the JSON lines go nowhere
    with tempfile.TemporaryDirectory() as tmp:
        target, flush = _middleware(variant, Path(tmp))
        if ablate:
            _ablate(target, ablate)
        _settle_garbage_collector()

        async def drive(count: int) -> None:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: Any) -> None:
                pass

            for _ in range(count):
                await target(_scope(), receive, send)

        asyncio.run(drive(2000))  # warm-up
        flush()
        started = time.process_time()
        asyncio.run(drive(requests))
        flush()
        return (time.process_time() - started) / requests * 1e6


# --------------------------------------------------------------------------- parts


def _time(call: Callable[[], object], count: int = 20_000) -> float:
    call()
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count * 1e6


def _server_span(tracer: Any, attributes: dict[str, Any]) -> None:
    from opentelemetry.trace import SpanKind

    span = tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes)
    span.update_name("GET /items/{item_id}")
    span.set_attributes({"http.route": "/items/{item_id}", "http.response.status_code": 200})
    span.end()


def parts() -> list[tuple[str, float]]:
    """Each piece of a traced request, timed on its own (microseconds of CPU per call)."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import Counter, Histogram

    from otel_lab.telemetry import metrics as prom
    from otel_lab.telemetry._wire import LogEncoder, SpanEncoder
    from otel_lab.telemetry.logs import AccessLog, json_formatter
    from otel_lab.telemetry.setup import build_resource

    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    resource = build_resource("bench")
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = tracer_provider.get_tracer("otel_lab.http")
    attributes = {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "user_agent.original": "wrk/4.2.0",
        "client.address": "127.0.0.1",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "request.id": "9f2c4e7d1a3b5c6d8e0f1a2b3c4d5e6f",
    }
    for _ in range(512):
        _server_span(tracer, attributes)
    batch = spans.get_finished_spans()

    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    access = logging.getLogger("bench.access")
    access.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(json_formatter())
    access.addHandler(stream)
    access.setLevel(logging.INFO)
    extra = {"method": "GET", "path": "/items/{item_id}", "status_code": 200, "elapsed_ms": 1.2}
    stream_cost = _time(lambda: access.info("request_completed", extra=extra))
    access.addHandler(LoggingHandler(logger_provider=logger_provider))
    both_cost = _time(lambda: access.info("request_completed", extra=extra), 5_000)
    records = logs.get_finished_logs()[-512:]

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    duration = meter.create_histogram("d", unit="s")
    duration_attributes = {
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }
    logging.getLogger("otel_lab.request").setLevel(logging.INFO)
    lean = AccessLog("bench")
    exemplar = {"trace_id": "a" * 32}
    # prometheus_client's own Counter and Histogram (unregistered), as the series were kept
    # before telemetry.metrics.RequestSeries, and the series as they are kept now.
    client_requests = Counter("requests", "", ["method", "path", "status"], registry=None)
    client_latency = Histogram(
        "request_latency_seconds", "", ["method", "path"], buckets=prom.LATENCY_BUCKETS,
        registry=None,
    )  # fmt: skip
    requests_seen, latency = prom.RequestSeries().series("GET", "/x", "200")
    span_encoder, log_encoder = SpanEncoder(), LogEncoder()
    per_span = len(batch)
    return [
        (
            "span start + 9 attributes + rename + 2 attributes + end (SDK)",
            _time(lambda: _server_span(tracer, attributes)),
        ),
        ("OTLP encoding per span, official protobuf encoder",
         _time(lambda: encode_spans(batch).SerializePartialToString(), 40) / per_span),
        ("OTLP encoding per span, direct encoder (_wire.py)",
         _time(lambda: span_encoder.encode(batch), 40) / per_span),
        ("access line: logging + python-json-logger to stderr", stream_cost),
        ("access line: the same + OTLP LoggingHandler", both_cost),
        ("OTLP encoding per log record, official encoder",
         _time(lambda: encode_logs(records).SerializeToString(), 40) / len(records)),
        ("OTLP encoding per log record, direct encoder",
         _time(lambda: log_encoder.encode(records), 40) / len(records)),
        ("access line: AccessLog.write (stderr only)",
         _time(lambda: lean.write(method="GET", path="/items/{item_id}", status_code=200,
                                  elapsed_ms=1.2, request_id="r" * 32, trace_id="a" * 32,
                                  span_id="b" * 16))),
        ("OTel histogram record, 3 attributes",
         _time(lambda: duration.record(0.01, duration_attributes))),
        ("Prometheus: prometheus_client counter inc + histogram observe with exemplar",
         _time(lambda: (client_requests.labels("GET", "/x", "200").inc(),
                        client_latency.labels("GET", "/x").observe(0.01, exemplar=exemplar)))),
        ("Prometheus: RequestSeries count + observe with exemplar (as the middleware does)",
         _time(lambda: (requests_seen.__setitem__(0, requests_seen[0] + 1),
                        latency.observe(0.01, "a" * 32)))),
    ]  # fmt: skip


# --------------------------------------------------------------------------- driver


def _run(variant: str, requests: int, pieces: tuple[str, ...] = ()) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--variant", variant, "--requests", str(requests),
         "--without", ",".join(pieces)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def against(commit: str, rounds: int, requests: int) -> int:
    """The package as it is against the package at ``commit``, alternated, medians."""
    os.environ["BENCH_AGAINST"] = commit
    figures: dict[str, list[float]] = {"against": [], "after": []}
    for round_number in range(rounds):
        order = ("against", "after") if round_number % 2 == 0 else ("after", "against")
        for variant in order:
            figures[variant].append(_run(variant, requests))
    print(f"CPU per request, median of {rounds} rounds of {requests} requests:")
    for variant, label in (("against", commit), ("after", "as it is")):
        print(
            f"  {statistics.median(figures[variant]):8.1f} us  {label}"
            f"   rounds {' '.join(f'{f:.1f}' for f in figures[variant])}"
        )
    return 0


def ablation(rounds: int, requests: int) -> int:
    """Each piece's cost inside the request loop: the package as it is against the same
    with that piece switched off, fresh interpreters in alternation, medians."""
    figures: dict[str, list[float]] = {name: [] for name in ABLATIONS}
    bare: list[float] = []
    for _ in range(rounds):
        bare.append(_run("none", requests))
        for name, pieces in ABLATIONS.items():
            figures[name].append(_run("after", requests, pieces))
    shipped = statistics.median(figures["as shipped"])
    print(f"CPU per request, median of {rounds} rounds of {requests} requests:")
    print(f"  {statistics.median(bare):8.1f} us  no telemetry (bare ASGI app)")
    for name in ABLATIONS:
        cost = statistics.median(figures[name])
        print(
            f"  {cost:8.1f} us  {name}  (saves {shipped - cost:5.1f} us)"
            f"   rounds {' '.join(f'{f:.1f}' for f in figures[name])}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=(*VARIANTS, "against"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--against",
        metavar="COMMIT",
        help="instead: the package as it is against the package at COMMIT (read from git), "
        "in alternation",
    )
    parser.add_argument("--parts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="instead: the package as it is with each piece switched off in turn",
    )
    parser.add_argument("--without", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        pieces = tuple(p for p in args.without.split(",") if p)
        print(f"{run_variant(args.variant, args.requests, pieces):.2f}")
        return 0
    if args.parts:
        for name, cost in parts():
            print(f"  {cost:8.1f} us  {name}")
        return 0
    if args.ablate:
        return ablation(args.rounds, args.requests)
    if args.against:
        return against(args.against, args.rounds, args.requests)

    figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            figures[variant].append(_run(variant, args.requests))
    none = statistics.median(figures["none"])
    print(f"CPU per request, median of {args.rounds} rounds of {args.requests} requests:")
    for variant in VARIANTS:
        cost = statistics.median(figures[variant])
        print(
            f"  {variant:7} {cost:8.1f} us   telemetry {cost - none:7.1f} us"
            f"   rounds {' '.join(f'{f:.1f}' for f in figures[variant])}"
        )
    print("\nthe parts, one at a time (CPU us per call):")
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, "--parts"], check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
