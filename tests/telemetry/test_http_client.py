"""``telemetry.http_client`` on ``otel_lab.http_client`` against the contrib aiohttp client
instrumentation on aiohttp: the same calls over real HTTP, each client exporting to its own
in-memory exporters. The spans and metrics agree but for what names the exception of a
refused connection (each client's own class)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_lab.http_client import ConnectError, HTTPClient
from otel_lab.runtime.harness import free_ports
from otel_lab.telemetry import TelemetryMiddleware
from otel_lab.telemetry.duration import MeterProvider  # the SDK's, + plain histograms
from otel_lab.telemetry.http_client import client_middleware
from otel_lab.telemetry.metrics import LATENCY_BUCKETS, REQUEST_SERIES

DURATION = "http.client.request.duration"
CALLS = (
    ("GET", "/ok?Signature=secret&page=2", 200),
    ("POST", "/fail", 500),
    ("GET", "/missing", 404),
    ("PURGE", "/ok", 200),
)


class Recorder:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def duration_points(self) -> list[dict[str, Any]]:
        """The points' attributes but the port (the two calls to a closed port differ)."""
        data = self.reader.get_metrics_data()
        return sorted(
            (
                {k: v for k, v in point.attributes.items() if k != "server.port"}
                for resource in data.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
                if metric.name == "http.client.request.duration"
                for point in metric.data.data_points
            ),
            key=lambda attributes: repr(sorted(attributes.items())),
        )

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


async def _serve(port: int) -> web.AppRunner:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"traceparent": request.headers.get("traceparent")})

    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"detail": "boom"}, status=500)

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_post("/fail", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _contrib_calls(session: aiohttp.ClientSession, base: str, closed: str) -> list[Any]:
    seen = []
    for method, path, status in CALLS:
        async with session.request(method, base + path) as response:
            assert response.status == status
            seen.append((await response.json()) if status == 200 else None)
    with pytest.raises(aiohttp.ClientConnectorError):
        async with session.get(closed + "/ok"):
            pass
    return seen


async def _calls(client: HTTPClient, base: str, closed: str) -> list[Any]:
    seen = []
    for method, path, status in CALLS:
        reply = await client.request(method, base + path)
        assert reply.status_code == status
        seen.append(reply.json() if status == 200 else None)
    with pytest.raises(ConnectError):
        await client.request("GET", closed + "/ok")
    return seen


def _run_both() -> tuple[Recorder, list[Any], Recorder, list[Any]]:
    theirs, ours = Recorder(), Recorder()
    port, closed_port = free_ports(2)
    base, closed = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{closed_port}"

    async def go() -> tuple[list[Any], list[Any]]:
        runner = await _serve(port)
        try:
            contrib = create_trace_config(
                tracer_provider=theirs.tracer_provider,
                meter_provider=theirs.meter_provider,
                sem_conv_opt_in_mode=_StabilityMode.HTTP,
            )
            async with aiohttp.ClientSession(trace_configs=[contrib]) as session:
                expected = await _contrib_calls(session, base, closed)
            middleware = client_middleware(ours.tracer_provider, ours.meter_provider)
            async with HTTPClient(middlewares=(middleware,)) as client:
                actual = await _calls(client, base, closed)
            return expected, actual
        finally:
            await runner.cleanup()

    expected, actual = asyncio.run(go())
    return theirs, expected, ours, actual


REFUSED = {"ClientConnectorError": "CONNECT_ERROR", "ConnectError": "CONNECT_ERROR"}


def _shape(span: ReadableSpan) -> tuple[Any, ...]:
    """What is compared: the port and each client's name for a refused connection replaced."""
    attributes = dict(span.attributes or {})
    port = attributes.pop("server.port")
    attributes["url.full"] = str(attributes["url.full"]).replace(f":{port}", ":PORT")
    if "error.type" in attributes:
        attributes["error.type"] = REFUSED.get(
            str(attributes["error.type"]), attributes["error.type"]
        )
    return (
        span.name,
        span.kind,
        span.status.status_code,
        attributes,
        [event.name for event in span.events],
    )


def test_client_spans_and_metrics_match_the_contrib_instrumentation() -> None:
    theirs, _, ours, _ = _run_both()

    expected = [_shape(s) for s in theirs.spans.get_finished_spans()]
    actual = [_shape(s) for s in ours.spans.get_finished_spans()]
    assert actual == expected
    assert len(actual) == len(CALLS) + 1
    assert all(shape[1] == SpanKind.CLIENT for shape in actual)
    assert actual[0][3]["url.full"] == "http://127.0.0.1:PORT/ok?Signature=REDACTED&page=2"
    assert actual[3][0] == "HTTP" and actual[3][3]["http.request.method"] == "_OTHER"
    assert actual[-1][3]["error.type"] == "CONNECT_ERROR"
    (refused,) = [s for s in ours.spans.get_finished_spans() if s.status.description]
    assert refused.attributes and refused.attributes["error.type"] == "ConnectError"
    assert refused.events[0].name == "exception"
    assert _points(ours) == _points(theirs)
    assert len(ours.duration_points()) == len(CALLS) + 1
    bounds = {tuple(p.explicit_bounds) for r in (ours, theirs) for p in r.points(DURATION)}
    assert bounds == {LATENCY_BUCKETS}  # the contrib's are the semconv advisory bounds too


def _points(recorder: Recorder) -> list[dict[str, Any]]:
    return [
        {k: REFUSED.get(str(v), v) if k == "error.type" else v for k, v in point.items()}
        for point in recorder.duration_points()
    ]


def test_the_server_receives_the_client_span_as_parent() -> None:
    _, _, ours, bodies = _run_both()
    spans = ours.spans.get_finished_spans()
    for span, body in zip(spans, bodies, strict=False):
        if body is not None:
            trace_id, span_id = body["traceparent"].split("-")[1:3]
            assert int(trace_id, 16) == span.context.trace_id
            assert int(span_id, 16) == span.context.span_id


def test_a_calls_server_and_client_durations_compare_bucket_by_bucket() -> None:
    """One call over real HTTP, measured by the client middleware and by the server's (OTel
    and Prometheus): the same bounds, so the client's bucket (its time includes the
    server's) is the server's or a later one, and the Prometheus buckets are the OTel ones."""
    recorder = Recorder()
    app = FastAPI()
    route = "/compare-buckets"  # its own Prometheus series in the process's registry

    @app.get(route)
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.06)  # (0.05, 0.075]: a bucket the server lacked before
        return {"ok": True}

    app.add_middleware(
        TelemetryMiddleware,
        tracer_provider=recorder.tracer_provider,
        meter_provider=recorder.meter_provider,
    )
    (port,) = free_ports(1)

    async def go() -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.01)
            middleware = client_middleware(recorder.tracer_provider, recorder.meter_provider)
            async with HTTPClient(middlewares=(middleware,)) as client:
                reply = await client.request("GET", f"http://127.0.0.1:{port}{route}")
                assert reply.status_code == 200
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)

    asyncio.run(go())
    (server,) = recorder.points("http.server.request.duration")
    (client,) = recorder.points(DURATION)
    assert tuple(server.explicit_bounds) == tuple(client.explicit_bounds) == LATENCY_BUCKETS
    assert server.count == client.count == 1
    assert server.sum <= client.sum
    assert server.bucket_counts.index(1) <= client.bucket_counts.index(1)
    assert server.bucket_counts.index(1) > LATENCY_BUCKETS.index(0.05)  # slept 60 ms
    prometheus = {
        sample.labels["le"]: sample.value
        for family in REQUEST_SERIES.collect()
        if family.name == "request_latency_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["path"] == route
    }
    cumulative = [
        float(sum(server.bucket_counts[: i + 1])) for i in range(len(LATENCY_BUCKETS) + 1)
    ]
    assert list(prometheus.values()) == cumulative
    assert [float(le) for le in prometheus] == [*LATENCY_BUCKETS, math.inf]
