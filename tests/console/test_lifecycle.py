"""Process-level behaviour: back-pressure, restart durability, port conflicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .builders import new_span_id, new_trace_id, span, traces_request
from .conftest import Console, start_console

PROTOBUF = "application/x-protobuf"


def test_full_queue_answers_503_then_restart_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "small.db"
    console = start_console(db, "--max-pending-rows", "2")
    try:
        trace_id = new_trace_id()
        big = traces_request("bp", [span(trace_id, new_span_id(), f"s{i}") for i in range(3)])
        r = console.post("/v1/traces", big.SerializeToString(), PROTOBUF)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == PROTOBUF
        assert console.api("/api/stats").json()["rows_refused"] == 3

        small = traces_request("bp", [span(trace_id, new_span_id(), "fits")])
        r = console.post("/v1/traces", small.SerializeToString(), PROTOBUF)
        assert r.status_code == 200
        assert ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse()
        console.trace(trace_id)
    finally:
        assert console.stop() == 0

    again: Console = start_console(db)
    try:
        spans = again.trace(trace_id)["spans"]
        assert [s["name"] for s in spans] == ["fits"]
        assert again.api("/api/services").json()["services"][0]["name"] == "bp"
    finally:
        assert again.stop() == 0
    assert "Traceback" not in again.log_path.read_text()


def test_port_in_use_is_a_clear_error(console: Console, tmp_path: Path) -> None:
    port = console.otlp_url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "otel_lab.console", "--otlp-port", port, "--ui-port", "0",
         "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
