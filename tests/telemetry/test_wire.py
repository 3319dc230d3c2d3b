"""The direct OTLP encoder against the official one: same bytes decoded to the same messages."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from otel_lab.telemetry._wire import LogEncoder, SpanEncoder

RESOURCE = Resource.create({"service.name": "wire-test", "service.instance.id": "é-1", "n": 3})

ATTRIBUTES = {
    "http.request.method": "GET",
    "http.route": "/items/{item_id}",
    "http.response.status_code": 200,
    "negative": -5,
    "big": 2**62,
    "ratio": 0.25,
    "flag": True,
    "off": False,
    "unicode": "naïve ✓ 𝄞",
    "empty": "",
    "strings": ("a", "b"),
    "ints": [1, -2, 3],
    "floats": [1.5, -0.0],
    "bools": [True, False],
    "long": "x" * 300,
}


def _spans() -> list:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(
        "wire.test", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0"
    )
    other = provider.get_tracer("wire.other")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "value"), ("k", "v")]),
    )
    with tracer.start_as_current_span(
        "GET /items/{item_id}",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes=ATTRIBUTES,
        links=[Link(remote, {"link.kind": "follows"}), Link(remote)],
    ) as root:
        root.add_event("cache.miss", {"key": "items:1", "n": 2, "http.route": "/items/{item_id}"})
        root.add_event("bare")
        with other.start_as_current_span("SELECT items", kind=SpanKind.CLIENT) as child:
            child.set_attribute("db.system.name", "postgresql")
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.record_exception(ValueError("bad value"))
        with tracer.start_as_current_span("ok", kind=SpanKind.PRODUCER) as ok:
            ok.set_status(Status(StatusCode.OK))
        tracer.start_span("consumer", kind=SpanKind.CONSUMER).end()
    # A root span without a parent, and one with a local parent, in a second resource.
    second = TracerProvider(resource=Resource.create({"service.name": "second"}))
    second.add_span_processor(SimpleSpanProcessor(exporter))
    second.get_tracer("x").start_span("lonely").end()
    return list(exporter.get_finished_spans())


def test_spans_decode_to_the_official_encoders_message() -> None:
    spans = _spans()
    official = ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString())
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert ours == official
    assert len([s for rs in ours.resource_spans for ss in rs.scope_spans for s in ss.spans]) == 5


def test_the_caches_give_the_same_bytes_the_second_time() -> None:
    spans = _spans()
    encoder = SpanEncoder()
    first = encoder.encode(spans)
    assert encoder.encode(spans) == first
    assert encoder.encode([]) == b""


def test_a_value_that_is_not_utf8_does_not_lose_the_batch() -> None:
    provider = TracerProvider(resource=RESOURCE)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span("bad \ud800", attributes={"v": "x\udfffy"}).end()
    decoded = ExportTraceServiceRequest.FromString(
        SpanEncoder().encode(exporter.get_finished_spans())
    )
    span = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert span.name.startswith("bad ") and span.attributes[0].value.string_value.startswith("x")


def _log_records() -> list:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("wire.test")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        tracer_provider = TracerProvider(resource=RESOURCE)
        with tracer_provider.get_tracer("t").start_as_current_span("parent"):
            logger.warning(
                "inside %s", "a span", extra={"request_id": "r-1", "n": 2, "ok": True, "flag": True}
            )
        logger.error("outside", extra={"items": [1, 2], "ratio": 0.5})
        logger.info({"structured": {"nested": [1, "two"]}})
    finally:
        logger.removeHandler(handler)
    return list(exporter.get_finished_logs())


def test_log_records_decode_to_the_official_encoders_message() -> None:
    records = _log_records()
    assert len(records) == 3
    official = ExportLogsServiceRequest.FromString(encode_logs(records).SerializeToString())
    ours = ExportLogsServiceRequest.FromString(LogEncoder().encode(records))
    assert ours == official


def test_a_key_with_many_values_is_encoded_right_after_it_leaves_the_cache() -> None:
    provider = TracerProvider(resource=RESOURCE)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(200):
        tracer.start_span("s", attributes={"url.path": f"/items/{i}", "flag": True}).end()
    spans = exporter.get_finished_spans()
    encoder = SpanEncoder()
    for _ in range(2):
        ours = ExportTraceServiceRequest.FromString(encoder.encode(spans))
        assert ours == ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString())


@pytest.mark.parametrize("value", [object(), {1, 2}])
def test_unsupported_values_are_refused(value: object) -> None:
    from otel_lab.telemetry._wire import any_value

    with pytest.raises(TypeError):
        any_value(value)


def test_a_span_built_outside_the_sdks_tracer_encodes_the_same() -> None:
    """A ReadableSpan made directly (an exporter test, another SDK part) holds a plain dict,
    not ``BoundedAttributes``: the encoder takes the public property then."""
    from opentelemetry.sdk.trace import ReadableSpan

    context = SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(1))
    span = ReadableSpan(
        "built",
        context=context,
        resource=RESOURCE,
        attributes={"http.route": "/x", "n": 1, "flag": True},
        start_time=1,
        end_time=2,
    )
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode([span]))
    assert ours == ExportTraceServiceRequest.FromString(encode_spans([span]).SerializeToString())
    assert len(ours.resource_spans[0].scope_spans[0].spans[0].attributes) == 3
