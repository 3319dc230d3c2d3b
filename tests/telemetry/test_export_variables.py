"""The standard OTLP exporter variables, checked where they matter: on the wire.

A child process sets telemetry up the way a service does, makes a span, a log record and a
metric point, and shuts down (which flushes); a real HTTP server in the test receives the
export requests. The bodies are decoded with the official protobuf messages, so a variable
that only looked honoured (read back from an object, but not sent) would fail here.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.telemetry.conftest import without_otel_variables

EMIT = r"""
import logging
from opentelemetry import metrics, trace
from otel_lab.telemetry import setup_telemetry
from otel_lab.telemetry.setup import shutdown_telemetry
setup_telemetry("wire-probe")
with trace.get_tracer("probe").start_as_current_span("probe-span"):
    logging.getLogger("probe").warning("probe-record")
metrics.get_meter("probe").create_counter("probe.count").add(3)
shutdown_telemetry()
"""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes  # as sent (still compressed when Content-Encoding says so)

    def decoded(self) -> bytes:
        return gzip.decompress(self.body) if self.headers.get("content-encoding") else self.body


class _Collector(BaseHTTPRequestHandler):
    received: list[Received]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.received.append(Received(self.path, headers, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[Received]]]:
    """A real OTLP/HTTP endpoint that accepts everything: (base URL, what it received)."""
    received: list[Received] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def exported(collector: tuple[str, list[Received]], **variables: str) -> dict[str, Received]:
    """Run EMIT with the collector as the endpoint and ``variables`` over it; what the
    collector received, by path (one request per signal)."""
    url, received = collector
    defaults = {"OTEL_METRIC_EXPORT_INTERVAL": "60000", "OTEL_EXPORTER_OTLP_ENDPOINT": url}
    env = without_otel_variables(**{**defaults, **variables})
    done = subprocess.run(
        [sys.executable, "-c", EMIT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    paths = [r.path for r in received]
    assert len(paths) == len(set(paths)), paths
    return {r.path: r for r in received}


def test_the_general_endpoint_gets_each_signal_at_its_path(
    collector: tuple[str, list[Received]],
) -> None:
    found = exported(collector)
    assert set(found) == {"/v1/traces", "/v1/metrics", "/v1/logs"}
    spans = ExportTraceServiceRequest.FromString(found["/v1/traces"].decoded())
    resource = {a.key: a.value.string_value for a in spans.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "wire-probe"
    assert [s.name for s in spans.resource_spans[0].scope_spans[0].spans] == ["probe-span"]
    logs = ExportLogsServiceRequest.FromString(found["/v1/logs"].decoded())
    records = [r for rl in logs.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert [r.body.string_value for r in records] == ["probe-record"]
    assert records[0].trace_id == spans.resource_spans[0].scope_spans[0].spans[0].trace_id
    points = ExportMetricsServiceRequest.FromString(found["/v1/metrics"].decoded())
    names = {
        m.name for rm in points.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert "probe.count" in names


def test_per_signal_endpoints_are_used_as_given(collector: tuple[str, list[Received]]) -> None:
    """The spec: a per-signal endpoint is the whole URL, no /v1/<signal> appended."""
    url = collector[0]
    found = exported(
        collector,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # nothing listens: must not be used
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{url}/tenant-a/spans",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{url}/tenant-a/points",
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{url}/tenant-a/records",
    )
    assert set(found) == {"/tenant-a/spans", "/tenant-a/points", "/tenant-a/records"}


def test_headers_general_and_per_signal(collector: tuple[str, list[Received]]) -> None:
    found = exported(
        collector,
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=acme,authorization=Bearer%20secret",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-tenant=tracing-team",
    )
    assert found["/v1/traces"].headers["x-tenant"] == "tracing-team"
    assert found["/v1/logs"].headers["x-tenant"] == "acme"
    assert found["/v1/logs"].headers["authorization"] == "Bearer secret"  # URL-decoded
    assert found["/v1/metrics"].headers["x-tenant"] == "acme"


def test_compression_general_and_per_signal(collector: tuple[str, list[Received]]) -> None:
    found = exported(
        collector, OTEL_EXPORTER_OTLP_COMPRESSION="gzip", OTEL_EXPORTER_OTLP_LOGS_COMPRESSION="none"
    )
    for path in ("/v1/traces", "/v1/metrics"):
        assert found[path].headers.get("content-encoding") == "gzip", path
        assert found[path].body[:2] == b"\x1f\x8b", path  # really gzip on the wire
    spans = ExportTraceServiceRequest.FromString(found["/v1/traces"].decoded())
    assert spans.resource_spans[0].scope_spans[0].spans[0].name == "probe-span"
    assert "content-encoding" not in found["/v1/logs"].headers
    ExportLogsServiceRequest.FromString(found["/v1/logs"].body)  # plain protobuf
