"""The server middleware in-process, with injected providers and in-memory exporters."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client.registry import REGISTRY

from otel_lab.telemetry import TelemetryMiddleware
from otel_lab.telemetry.duration import MeterProvider


class Probe:
    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        excluded: str = "",
        meter_provider: type[sdk_metrics.MeterProvider] = MeterProvider,
    ) -> None:
        monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", excluded)
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider(resource=Resource.create({"service.name": "probe"}))
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        @app.get("/in-flight")
        async def in_flight() -> dict[str, float | None]:
            return {"concurrent_requests": REGISTRY.get_sample_value("concurrent_requests")}

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("boom")

        @app.get("/handled")
        async def handled() -> JSONResponse:
            # What the services' error handler does: mark the span, then answer.
            span = trace.get_current_span()
            span.set_status(Status(StatusCode.ERROR, "upstream_timeout"))
            span.set_attribute("error.type", "upstream_timeout")
            return JSONResponse({"detail": "slow"}, status_code=504)

        app.add_middleware(
            TelemetryMiddleware,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider(metric_readers=[self.reader]),
        )
        self.app = app

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **kwargs)  # type: ignore[arg-type]

        return asyncio.run(go())

    def only_span(self) -> ReadableSpan:
        (span,) = self.spans.get_finished_spans()
        return span

    def duration_data_points(self) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            if sm.scope.name == "otel_lab.http"
            for metric in sm.metrics
            if metric.name == "http.server.request.duration" and metric.unit == "s"
            for point in metric.data.data_points
        ]

    def duration_points(self) -> list[dict[str, object]]:
        return [dict(point.attributes or {}) for point in self.duration_data_points()]


# The package's MeterProvider (the middleware keeps the duration in plain numbers) and the
# SDK's (the middleware records through the SDK's instrument, as in zero-code mode).
@pytest.fixture(params=[MeterProvider, sdk_metrics.MeterProvider], ids=["plain", "sdk"])
def probe(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Probe]:
    yield Probe(monkeypatch, meter_provider=request.param)


def test_a_matched_route_names_the_span_and_its_attributes(probe: Probe) -> None:
    response = probe.request("GET", "http://example.test:8123/items/7?q=1&sig=secret")
    assert response.status_code == 200
    span = probe.only_span()
    assert span.name == "GET /items/{item_id}"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/items/7"
    assert attributes["url.query"] == "q=1&sig=REDACTED"
    assert attributes["server.address"] == "example.test"
    assert attributes["server.port"] == 8123
    assert attributes["url.scheme"] == "http"
    assert "error.type" not in attributes
    assert response.headers["traceresponse"].split("-")[1] == f"{span.context.trace_id:032x}"


def test_an_unknown_method_is_other_with_the_original_kept(probe: Probe) -> None:
    probe.request("FOO", "/items/1")
    span = probe.only_span()
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "FOO"
    assert span.name.startswith("HTTP")


def test_known_methods_follow_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,FOO")
    probe = Probe(monkeypatch)
    probe.request("FOO", "/items/1")
    probe.request("POST", "/items/1")
    methods = [
        dict(s.attributes or {})["http.request.method"] for s in probe.spans.get_finished_spans()
    ]
    assert methods == ["FOO", "_OTHER"]


def test_an_unmatched_path_leaves_the_route_unset(probe: Probe) -> None:
    assert probe.request("GET", "/nowhere").status_code == 404
    span = probe.only_span()
    assert span.name == "GET"
    assert "http.route" not in (span.attributes or {})
    (point,) = probe.duration_points()
    assert "http.route" not in point and point["http.response.status_code"] == 404


def test_a_failure_sets_error_type_on_the_span_and_the_duration_metric(probe: Probe) -> None:
    response = probe.request("GET", "/boom")
    assert response.status_code == 500
    assert response.json()["detail"] == "Internal Server Error"
    span = probe.only_span()
    assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
    assert not span.status.is_ok
    (point,) = probe.duration_points()
    assert point["error.type"] == "RuntimeError" and point["http.route"] == "/boom"


def test_the_applications_error_type_and_status_are_kept(probe: Probe) -> None:
    assert probe.request("GET", "/handled").status_code == 504
    span = probe.only_span()
    assert span.attributes is not None and span.attributes["error.type"] == "upstream_timeout"
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "upstream_timeout"
    (point,) = probe.duration_points()
    assert point["error.type"] == "upstream_timeout"


def test_excluded_urls_are_not_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = Probe(monkeypatch, excluded="items/2,boom")
    probe.request("GET", "/items/2")
    probe.request("GET", "/items/3")
    names = [dict(s.attributes or {})["url.path"] for s in probe.spans.get_finished_spans()]
    assert names == ["/items/3"]


def test_an_incoming_traceparent_is_the_parent(probe: Probe) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    probe.request("GET", "/items/1", headers={"traceparent": traceparent})
    span = probe.only_span()
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"


def test_the_access_line_and_the_exemplar_point_at_the_span(
    probe: Probe, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_lab.request")  # the services' level
    capfd.readouterr()
    probe.request("GET", "/items/41", headers={"x-request-id": "access-line-41"})
    span = probe.only_span()
    trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
    (line,) = (
        json.loads(text)
        for text in capfd.readouterr().err.splitlines()
        if "access-line-41" in text and "request_completed" in text
    )
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
    assert (line["method"], line["path"], line["status_code"]) == ("GET", "/items/{item_id}", 200)
    exemplars = [
        sample.exemplar.labels["trace_id"]
        for metric in REGISTRY.collect()
        if metric.name == "request_latency_seconds"
        for sample in metric.samples
        if sample.labels.get("path") == "/items/{item_id}" and sample.exemplar is not None
    ]
    assert trace_id in exemplars
    (point,) = probe.duration_data_points()
    assert point.count == 1 and point.exemplars
    exemplar = point.exemplars[0]
    assert (exemplar.trace_id, exemplar.span_id) == (span.context.trace_id, span.context.span_id)


def test_concurrent_requests_counts_the_request_being_served(probe: Probe) -> None:
    before = REGISTRY.get_sample_value("concurrent_requests")
    assert before is not None
    during = probe.request("GET", "/in-flight").json()["concurrent_requests"]
    assert during == before + 1
    assert REGISTRY.get_sample_value("concurrent_requests") == before
    assert probe.request("GET", "/boom").status_code == 500  # a failure is counted out too
    assert REGISTRY.get_sample_value("concurrent_requests") == before
