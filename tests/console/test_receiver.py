"""OTLP/HTTP protocol behaviour of the receiver, asserted through the JSON API."""

from __future__ import annotations

import gzip
import json
import logging
import socket
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import (
    NOW,
    log_record,
    logs_request,
    new_span_id,
    new_trace_id,
    otlp_json_traces,
    span,
    traces_request,
)
from .conftest import Console

PROTOBUF = "application/x-protobuf"


def test_protobuf_spans_keep_every_field(console: Console) -> None:
    trace_id, root, child = new_trace_id(), new_span_id(), new_span_id()
    attributes = {
        "http.route": "/items/{id}",
        "http.response.status_code": 500,
        "cache.hit": False,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "nested": {"k": 1},
        "raw": b"\x01\x02",
    }
    req = traces_request(
        "proto-svc",
        [
            span(
                trace_id,
                root,
                "GET /items/{id}",
                kind=Span.SPAN_KIND_SERVER,
                duration_ms=250,
                attributes=attributes,
                status=2,
                message="boom",
                events=[("exception", NOW + 1000, {"exception.type": "KeyError"})],
            ),
            span(
                trace_id,
                child,
                "SELECT items",
                parent=root,
                kind=Span.SPAN_KIND_CLIENT,
                start=NOW + 5_000_000,
                duration_ms=20,
            ),
        ],
        resource={"service.version": "1.0.0", "deployment.environment": "test"},
    )
    r = console.post("/v1/traces", req.SerializeToString(), PROTOBUF)
    assert r.status_code == 200
    assert r.headers["content-type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")

    trace = console.trace(trace_id, spans=2)
    assert trace["trace_id"] == trace_id
    first, second = trace["spans"]  # ordered by start time
    assert first == {
        "trace_id": trace_id,
        "span_id": root,
        "parent_span_id": None,
        "name": "GET /items/{id}",
        "kind": "SERVER",
        "service_name": "proto-svc",
        "start_time_unix_nano": NOW,
        "end_time_unix_nano": NOW + 250_000_000,
        "duration_ms": 250.0,
        "status": {"code": "ERROR", "message": "boom"},
        "attributes": {**attributes, "raw": "AQI="},  # bytes as base64, like OTLP JSON
        "events": [
            {
                "name": "exception",
                "time_unix_nano": NOW + 1000,
                "attributes": {"exception.type": "KeyError"},
            }
        ],
        "links": [],
        "resource": {
            "service.name": "proto-svc",
            "service.version": "1.0.0",
            "deployment.environment": "test",
        },
        "scope": {"name": "tests.console", "version": "1.2.3"},
    }
    assert isinstance(first["attributes"]["http.response.status_code"], int)
    assert first["attributes"]["cache.hit"] is False
    assert second["parent_span_id"] == root
    assert second["kind"] == "CLIENT"
    assert second["status"] == {"code": "UNSET", "message": ""}
    assert second["duration_ms"] == 20.0


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_otlp_json_with_hex_ids(console: Console, compressed: bool) -> None:
    trace_id, root, child = new_trace_id(), new_span_id(), new_span_id()
    body = json.dumps(otlp_json_traces("json-svc", trace_id, root, child)).encode()
    headers = {"content-encoding": "gzip"} if compressed else {}
    if compressed:
        body = gzip.compress(body)
    r = console.post("/v1/traces", body, "application/json; charset=utf-8", **headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {}

    spans = console.trace(trace_id, spans=2)["spans"]
    root_span, child_span = spans
    assert root_span["span_id"] == root
    assert root_span["kind"] == "SERVER"
    assert root_span["status"] == {"code": "OK", "message": ""}
    assert root_span["attributes"] == {
        "http.route": "/orders",
        "http.response.status_code": 201,
        "sampled": True,
        "ratio": 0.25,
        "tags": ["a", 2],
    }
    assert root_span["events"] == [
        {"name": "validated", "time_unix_nano": NOW + 5_000_000, "attributes": {"items": 3}}
    ]
    assert root_span["resource"]["deployment.environment"] == "json-test"
    assert root_span["scope"] == {"name": "json-client", "version": "0.1"}
    assert child_span["parent_span_id"] == root
    assert child_span["kind"] == "CLIENT"
    assert child_span["status"] == {"code": "ERROR", "message": "unique violation"}
    assert child_span["links"] == [
        {
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "attributes": {},
        }
    ]


def test_gzip_protobuf(console: Console) -> None:
    trace_id = new_trace_id()
    req = traces_request("gzip-svc", [span(trace_id, new_span_id(), "compressed")])
    r = console.post(
        "/v1/traces",
        gzip.compress(req.SerializeToString()),
        PROTOBUF,
        **{"content-encoding": "gzip"},
    )
    assert r.status_code == 200
    assert console.trace(trace_id)["spans"][0]["name"] == "compressed"


def test_partial_success_protobuf(console: Console) -> None:
    trace_id = new_trace_id()
    good = span(trace_id, new_span_id(), "good")
    bad = span(trace_id, new_span_id(), "bad")
    bad.trace_id = b"\x01\x02\x03"
    r = console.post(
        "/v1/traces", traces_request("partial", [good, bad]).SerializeToString(), PROTOBUF
    )
    assert r.status_code == 200
    response = ExportTraceServiceResponse.FromString(r.content)
    assert response.partial_success.rejected_spans == 1
    assert "trace_id must be 16" in response.partial_success.error_message
    assert [s["name"] for s in console.trace(trace_id)["spans"]] == ["good"]


def test_partial_success_json_logs(console: Console) -> None:
    body = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "pj"}}]
                },
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": str(NOW), "body": {"stringValue": "ok"}},
                            {
                                "timeUnixNano": str(NOW),
                                "traceId": "abcd",
                                "body": {"stringValue": "x"},
                            },
                        ]
                    }
                ],
            }
        ]
    }
    r = console.post("/v1/logs", json.dumps(body).encode(), "application/json")
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"  # int64 is a string in OTLP JSON
    assert "trace_id must be 16 bytes" in partial["errorMessage"]


def test_undecodable_protobuf_is_400_with_status(console: Console) -> None:
    r = console.post("/v1/traces", b"\x0a\xff\xff\xff", PROTOBUF)
    assert r.status_code == 400
    assert r.headers["content-type"] == PROTOBUF
    status = status_pb2.Status.FromString(r.content)
    assert status.code == 3
    assert "not a valid protobuf ExportTraceServiceRequest" in status.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be an object"),
        (
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}
            ).encode(),
            "is not hex",
        ),
        (json.dumps({"resourceSpans": "nope"}).encode(), "not a valid OTLP JSON"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
    ids=["syntax", "array", "hex", "shape", "deep"],
)
def test_undecodable_json_is_400(console: Console, body: bytes, expected: str) -> None:
    r = console.post("/v1/traces", body, "application/json")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"] == 3
    assert expected in r.json()["message"]


def test_corrupt_gzip_is_400(console: Console) -> None:
    r = console.post("/v1/traces", b"not gzip", PROTOBUF, **{"content-encoding": "gzip"})
    assert r.status_code == 400
    assert "not valid gzip" in status_pb2.Status.FromString(r.content).message


def test_unknown_content_type_is_415(console: Console) -> None:
    r = console.post("/v1/traces", b"hello", "text/plain")
    assert r.status_code == 415
    assert "application/x-protobuf or application/json" in r.json()["message"]
    r = console.post("/v1/traces", b"x", PROTOBUF, **{"content-encoding": "br"})
    assert r.status_code == 415


def test_grpc_content_type_over_http1_gets_hint(console: Console) -> None:
    r = console.post("/v1/traces", b"\x00\x00\x00\x00\x00", "application/grpc")
    assert r.status_code == 415
    assert "OTLP/HTTP" in r.text and "http/protobuf" in r.text
    assert r.headers["grpc-status"] == "12"


def test_grpc_exporter_gets_hint(console: Console, caplog: pytest.LogCaptureFixture) -> None:
    """A real OTLP/gRPC exporter pointed at the HTTP port learns what to change."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(
        endpoint=console.otlp_url.removeprefix("http://"), insecure=True, timeout=5
    )
    tracer = TracerProvider().get_tracer("grpc-test")
    with tracer.start_as_current_span("misrouted") as s:
        pass
    with caplog.at_level(logging.ERROR):
        result = exporter.export([s])  # type: ignore[list-item]
    exporter.shutdown()
    assert result == SpanExportResult.FAILURE
    text = caplog.text
    assert "UNIMPLEMENTED" in text
    assert "OTLP/HTTP receiver" in text and "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in text


def test_http2_preface_without_grpc_still_answered(console: Console) -> None:
    """A raw HTTP/2 client (no gRPC) gets a 505 with the hint rather than a dropped socket."""
    import h2.connection
    import h2.events

    host, port = console.otlp_url.removeprefix("http://").rsplit(":", 1)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "POST"), (":path", "/v1/traces"), (":scheme", "http"), (":authority", host)],
        end_stream=True,
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        status, body, done = None, b"", False
        while not done:
            data = sock.recv(65536)
            assert data, "connection closed before the answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            sock.sendall(conn.data_to_send())
    assert status == b"505"
    assert b"OTLP/HTTP" in body


def test_paths_and_methods(console: Console) -> None:
    info = console.http.get(console.otlp_url + "/")
    assert info.status_code == 200
    assert info.json()["ui"] == console.ui_url
    assert console.http.get(console.otlp_url + "/v1/traces").status_code == 405
    r = console.post("/v2/traces", b"", PROTOBUF)
    assert r.status_code == 404
    assert "no such path" in r.json()["detail"]


def test_empty_request_is_accepted(console: Console) -> None:
    r = console.post("/v1/logs", b"", PROTOBUF)
    assert r.status_code == 200
    assert ExportLogsServiceResponse.FromString(r.content) == ExportLogsServiceResponse()


def test_retried_batch_does_not_duplicate_spans(console: Console) -> None:
    trace_id, root = new_trace_id(), new_span_id()
    first = traces_request(
        "retry-svc",
        [span(trace_id, root, "root", status=2), span(trace_id, new_span_id(), "a", parent=root)],
    )
    body = first.SerializeToString()
    assert console.post("/v1/traces", body, PROTOBUF).status_code == 200
    assert console.post("/v1/traces", body, PROTOBUF).status_code == 200  # exporter retry
    later = traces_request("retry-svc", [span(trace_id, new_span_id(), "b", parent=root)])
    assert console.post("/v1/traces", later.SerializeToString(), PROTOBUF).status_code == 200
    console.trace(trace_id, spans=3)

    def summary() -> dict[str, Any] | None:
        found = console.api("/api/traces", service="retry-svc").json()["traces"]
        match = [t for t in found if t["trace_id"] == trace_id]
        return match[0] if match and match[0]["span_count"] == 3 else None

    s = console.wait_for(summary)
    assert s["error_count"] == 1
    assert s["root_span_name"] == "root"
    assert len(console.api(f"/api/traces/{trace_id}").json()["spans"]) == 3
    services = {s["name"]: s for s in console.api("/api/services").json()["services"]}
    assert services["retry-svc"]["span_count"] == 3  # the retry is not counted twice
    assert console.api("/api/stats").json()["duplicate_spans"] >= 2


def test_logs_of_a_trace(console: Console) -> None:
    trace_id, span_id = new_trace_id(), new_span_id()
    records = [
        log_record("first", trace_id=trace_id, span_id=span_id, attributes={"user.id": 7}),
        log_record(
            {"event": "paid", "amount": 12.5},
            severity=17,
            severity_text="ERROR",
            trace_id=trace_id,
            span_id=span_id,
            at=NOW + 1000,
        ),
        log_record("unrelated"),
    ]
    r = console.post("/v1/logs", logs_request("log-svc", records).SerializeToString(), PROTOBUF)
    assert r.status_code == 200
    logs = console.wait_for(
        lambda: (
            (x := console.api(f"/api/traces/{trace_id}/logs").json()["logs"]) and len(x) == 2 and x
        )
    )
    assert [entry["body"] for entry in logs] == ["first", {"event": "paid", "amount": 12.5}]
    first = logs[0]
    assert first["trace_id"] == trace_id and first["span_id"] == span_id
    assert first["severity_text"] == "INFO" and first["severity_number"] == 9
    assert first["attributes"] == {"user.id": 7}
    assert first["time_unix_nano"] == NOW
    assert first["service_name"] == "log-svc"
    assert first["resource"] == {"service.name": "log-svc"}
    assert logs[1]["severity_text"] == "ERROR"


def test_timestamps_beyond_int64_are_rejected_not_fatal(console: Console) -> None:
    trace_id = new_trace_id()
    late = span(trace_id, new_span_id(), "far future")
    late.end_time_unix_nano = 2**64 - 1  # legal fixed64, but not a SQLite integer
    ok = span(trace_id, new_span_id(), "now")
    r = console.post("/v1/traces", traces_request("t64", [late, ok]).SerializeToString(), PROTOBUF)
    partial = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert (partial.rejected_spans, partial.error_message) == (
        1,
        "timestamps must be below 2^63 ns",
    )
    assert [s["name"] for s in console.trace(trace_id)["spans"]] == ["now"]


def test_large_batch_all_rows_arrive(console: Console) -> None:
    """2,003 spans: decoded off the event loop and inserted in every chunk size."""
    trace_ids = [new_trace_id() for _ in range(3)]
    spans = [
        span(trace_ids[i % 3], new_span_id(), f"op-{i % 7}", attributes={"i": i, "k": "v" * 20})
        for i in range(2003)
    ]
    body = traces_request("bulk-svc", spans).SerializeToString()
    assert len(body) > 64 * 1024
    r = console.post("/v1/traces", gzip.compress(body), PROTOBUF, **{"content-encoding": "gzip"})
    assert r.status_code == 200
    counts = [len(console.trace(t, spans=667)["spans"]) for t in trace_ids]
    assert sorted(counts) == [667, 668, 668]
    ops = console.api("/api/services/bulk-svc/operations").json()["operations"]
    assert len(ops) == 7
