"""Build OTLP export requests with opentelemetry-proto (protobuf) or as OTLP JSON."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

# Shared with the synthetic-data generator.
from .synthetic import any_value, key_values

NOW = 1_760_000_000_000_000_000  # a fixed moment (ns) keeps assertions exact


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def span(
    trace_id: str,
    span_id: str,
    name: str,
    *,
    parent: str | None = None,
    kind: int = Span.SPAN_KIND_INTERNAL,
    start: int = NOW,
    duration_ms: float = 10,
    attributes: dict[str, Any] | None = None,
    status: int = 0,
    message: str = "",
    events: list[tuple[str, int, dict[str, Any]]] | None = None,
) -> Span:
    s = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1_000_000),
    )
    s.attributes.extend(key_values(attributes or {}))
    s.status.code = status
    s.status.message = message
    for event_name, at, event_attrs in events or []:
        event = s.events.add(name=event_name, time_unix_nano=at)
        event.attributes.extend(key_values(event_attrs))
    return s


def traces_request(
    service: str,
    spans: list[Span],
    *,
    resource: dict[str, Any] | None = None,
    scope: tuple[str, str] = ("tests.console", "1.2.3"),
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": service, **(resource or {})}))
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = scope
    ss.spans.extend(spans)
    return req


def logs_request(service: str, records: list[LogRecord]) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(key_values({"service.name": service}))
    sl = rl.scope_logs.add()
    sl.scope.name = "tests.console"
    sl.log_records.extend(records)
    return req


def log_record(
    body: Any,
    *,
    severity: int = 9,
    severity_text: str = "INFO",
    trace_id: str | None = None,
    span_id: str | None = None,
    at: int = NOW,
    attributes: dict[str, Any] | None = None,
) -> LogRecord:
    record = LogRecord(
        time_unix_nano=at,
        observed_time_unix_nano=at + 1000,
        severity_number=severity,
        severity_text=severity_text,
        trace_id=bytes.fromhex(trace_id) if trace_id else b"",
        span_id=bytes.fromhex(span_id) if span_id else b"",
    )
    record.body.CopyFrom(any_value(body))
    record.attributes.extend(key_values(attributes or {}))
    return record


def metrics_request(service: str, metrics: list[Metric]) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(key_values({"service.name": service}))
    sm = rm.scope_metrics.add()
    sm.scope.name = "tests.console"
    sm.metrics.extend(metrics)
    return req


def otlp_json_traces(service: str, trace_id: str, root_id: str, child_id: str) -> dict[str, Any]:
    """OTLP JSON as the spec writes it: hex ids, int64 as strings, enums as numbers."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": service}},
                        {"key": "deployment.environment", "value": {"stringValue": "json-test"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "json-client", "version": "0.1"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": root_id,
                                "parentSpanId": "",
                                "name": "POST /orders",
                                "kind": 2,
                                "startTimeUnixNano": str(NOW),
                                "endTimeUnixNano": str(NOW + 120_000_000),
                                "attributes": [
                                    {"key": "http.route", "value": {"stringValue": "/orders"}},
                                    {
                                        "key": "http.response.status_code",
                                        "value": {"intValue": "201"},
                                    },
                                    {"key": "sampled", "value": {"boolValue": True}},
                                    {"key": "ratio", "value": {"doubleValue": 0.25}},
                                    {
                                        "key": "tags",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"intValue": "2"}]
                                            }
                                        },
                                    },
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": str(NOW + 5_000_000),
                                        "name": "validated",
                                        "attributes": [
                                            {"key": "items", "value": {"intValue": "3"}}
                                        ],
                                    }
                                ],
                                "status": {"code": 1},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": child_id,
                                "parentSpanId": root_id,
                                "name": "INSERT orders",
                                "kind": 3,
                                "startTimeUnixNano": str(NOW + 10_000_000),
                                "endTimeUnixNano": str(NOW + 60_000_000),
                                "attributes": [
                                    {
                                        "key": "db.system.name",
                                        "value": {"stringValue": "postgresql"},
                                    }
                                ],
                                "links": [
                                    {
                                        "traceId": "5b8efff798038103d269b633813fc60c",
                                        "spanId": "eee19b7ec3c1b174",
                                        "attributes": [],
                                    }
                                ],
                                "status": {"code": 2, "message": "unique violation"},
                            },
                        ],
                    }
                ],
            }
        ]
    }
