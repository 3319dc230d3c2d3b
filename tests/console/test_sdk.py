"""The real OpenTelemetry SDK, exporting over OTLP/HTTP to the console, end to end."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from .conftest import Console


@dataclass
class Sdk:
    service: str
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    meter_provider: MeterProvider
    logger: logging.Logger

    def flush(self) -> None:
        assert self.tracer_provider.force_flush(10_000)
        assert self.logger_provider.force_flush(10_000)
        assert self.meter_provider.force_flush(10_000)


@pytest.fixture(params=[Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"])
def sdk(console: Console, request: pytest.FixtureRequest) -> Iterator[Sdk]:
    """Providers of our own (not the global ones), each with an OTLP/HTTP exporter."""
    compression: Compression = request.param
    service = f"sdk-{uuid.uuid4().hex[:8]}"
    resource = Resource.create({"service.name": service, "service.version": "9.9.9"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{console.otlp_url}/v1/traces", compression=compression)
        )
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{console.otlp_url}/v1/logs", compression=compression)
        )
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{console.otlp_url}/v1/metrics", compression=compression),
        export_interval_millis=3_600_000,  # exported by force_flush only
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger = logging.getLogger(f"tests.console.{service}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    yield Sdk(service, tracer_provider, logger_provider, meter_provider, logger)
    logger.removeHandler(handler)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()


def test_sdk_traces_logs_and_metrics_correlate(console: Console, sdk: Sdk) -> None:
    tracer = sdk.tracer_provider.get_tracer("tests.console.sdk", "0.1")
    meter = sdk.meter_provider.get_meter("tests.console.sdk")
    latency = meter.create_histogram("checkout.duration", unit="ms")
    orders = meter.create_counter("orders.placed", unit="{order}")

    with tracer.start_as_current_span(
        "POST /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}
    ) as root:
        with tracer.start_as_current_span("charge card") as child:
            child.set_attribute("payment.amount", 12.5)
            child.add_event("card.authorized", {"attempt": 2})
            try:
                raise ValueError("card declined")
            except ValueError as exc:
                child.record_exception(exc)
                child.set_status(Status(StatusCode.ERROR, "card declined"))
            sdk.logger.warning("charge failed for order %s", "o-1", extra={"order.id": "o-1"})
        latency.record(123.0, {"http.route": "/checkout"})  # inside a sampled span: exemplar
        orders.add(1, {"region": "eu"})
    trace_id = format(root.get_span_context().trace_id, "032x")
    root_id = format(root.get_span_context().span_id, "016x")
    child_id = format(child.get_span_context().span_id, "016x")
    sdk.flush()

    spans = console.trace(trace_id, spans=2)["spans"]
    by_name = {s["name"]: s for s in spans}
    server, charge = by_name["POST /checkout"], by_name["charge card"]
    assert server["span_id"] == root_id and server["parent_span_id"] is None
    assert server["kind"] == "SERVER"
    assert server["attributes"] == {"http.route": "/checkout"}
    assert server["resource"]["service.name"] == sdk.service
    assert server["resource"]["service.version"] == "9.9.9"
    assert server["resource"]["telemetry.sdk.language"] == "python"
    assert server["scope"] == {"name": "tests.console.sdk", "version": "0.1"}
    assert charge["parent_span_id"] == root_id and charge["kind"] == "INTERNAL"
    assert charge["status"] == {"code": "ERROR", "message": "card declined"}
    assert charge["attributes"]["payment.amount"] == 12.5
    events = {e["name"]: e for e in charge["events"]}
    assert events["card.authorized"]["attributes"] == {"attempt": 2}
    assert events["exception"]["attributes"]["exception.type"] == "ValueError"
    assert events["exception"]["attributes"]["exception.message"] == "card declined"

    def summary() -> dict[str, Any] | None:
        found = console.api("/api/traces", service=sdk.service, status="error").json()["traces"]
        return found[0] if found else None

    s = console.wait_for(summary)
    assert s["trace_id"] == trace_id
    assert (s["root_span_name"], s["span_count"], s["error_count"]) == ("POST /checkout", 2, 1)

    logs = console.wait_for(lambda: console.api(f"/api/traces/{trace_id}/logs").json()["logs"])
    assert len(logs) == 1
    log = logs[0]
    assert log["body"] == "charge failed for order o-1"
    assert log["span_id"] == child_id
    assert log["severity_text"] == "WARN" and log["severity_number"] == 13
    assert log["attributes"]["order.id"] == "o-1"
    assert log["service_name"] == sdk.service

    def histogram() -> list[dict[str, Any]] | None:
        points = console.api("/api/metrics/checkout.duration", service=sdk.service).json()
        return points.get("points")

    point = console.wait_for(histogram)[-1]
    assert point["count"] == 1 and point["sum"] == 123.0
    assert sum(point["bucket_counts"]) == 1
    assert len(point["bucket_counts"]) == len(point["explicit_bounds"]) + 1
    assert point["attributes"] == {"http.route": "/checkout"}
    (exemplar,) = point["exemplars"]
    assert exemplar["trace_id"] == trace_id
    assert exemplar["span_id"] == root_id
    assert exemplar["value"] == 123.0

    counter = console.api("/api/metrics/orders.placed", service=sdk.service).json()
    assert counter["type"] == "sum" and counter["is_monotonic"] is True
    assert counter["points"][-1]["value"] == 1
    assert counter["points"][-1]["attributes"] == {"region": "eu"}
