"""MicroTrace analyze end to end: ``POST /analyze`` through the gateway, its trace, its JSON logs.

MicroTrace's curl (with ``X-Request-ID: demo-123``) must answer its documented body; the trace
must show the WorkerService as its own span under the api's request span; MicroTrace's two
log events must carry the request ID, both as JSON lines on stderr and over OTLP.
"""

from __future__ import annotations

import time

import httpx
import pytest

from otel_lab.runtime.harness import RunningSystem
from tests.conftest import Console, Span, ancestors, server_above, span_named, trace_id_of

DEMO_BODY = {"a": 10.5, "b": 3.5}
DEMO_RESPONSE = {"sum": 14.0, "difference": 7.0}


def _connected(spans: list[Span]) -> bool:
    """Every span's parent has arrived (services export in their own batches)."""
    ids = {s["span_id"] for s in spans}
    return all(s["parent_span_id"] is None or s["parent_span_id"] in ids for s in spans)


def _wait_for_log_lines(system: RunningSystem, service: str, request_id: str) -> list[dict]:
    """The service's stderr JSON lines for a request, once both MicroTrace events are there."""
    deadline = time.monotonic() + 10
    mine: list[dict] = []
    while time.monotonic() < deadline:
        mine = [
            line for line in system.log_records(service) if line.get("request_id") == request_id
        ]
        if {"request_completed", "analyze_response"} <= {line.get("message") for line in mine}:
            return mine
        time.sleep(0.2)
    raise AssertionError(f"{service} log lines for {request_id}: {mine}")


def test_documented_curl_through_the_gateway(gateway: httpx.Client) -> None:
    response = gateway.post("/analyze", json=DEMO_BODY, headers={"X-Request-ID": "demo-123"})
    assert response.status_code == 200, response.text
    assert response.json() == DEMO_RESPONSE
    assert response.headers["x-request-id"] == "demo-123"
    assert response.headers["content-type"] == "application/json"


def test_on_the_api_port_and_with_integers(api: httpx.Client) -> None:
    assert api.post("/analyze", json=DEMO_BODY).json() == DEMO_RESPONSE
    assert api.post("/analyze", json={"a": 10, "b": -3}).json() == {
        "sum": 7.0,
        "difference": 13.0,
    }


def test_trace_has_the_worker_span_under_the_api_request(
    gateway: httpx.Client, console: Console
) -> None:
    response = gateway.post("/analyze", json=DEMO_BODY, headers={"X-Request-ID": "demo-trace"})
    assert response.status_code == 200
    trace_id = trace_id_of(response)

    spans = console.trace(
        trace_id,
        until=lambda spans: (
            any(s["name"] == "WorkerService.analyze" for s in spans)
            and any(s["service_name"] == "gateway" for s in spans)
            and _connected(spans)
        ),
    )
    worker = span_named(spans, "WorkerService.analyze", "api")
    assert worker["kind"] == "INTERNAL"
    server = server_above(spans, worker)
    assert server["name"] == "POST /analyze" and server["service_name"] == "api"
    assert server["attributes"]["http.route"] == "/analyze"
    assert server["attributes"]["request.id"] == "demo-trace"
    gateway_call = ancestors(spans, server)
    assert gateway_call and gateway_call[-1]["service_name"] == "gateway", "one trace from the edge"
    assert worker["status"]["code"] != "ERROR"
    assert worker["attributes"]["analysis.a"] == 10.5
    assert worker["attributes"]["analysis.b"] == 3.5
    assert worker["attributes"]["analysis.sum"] == 14.0
    assert worker["attributes"]["analysis.difference"] == 7.0


def test_documented_log_events_carry_the_request_id(
    gateway: httpx.Client, console: Console, system: RunningSystem
) -> None:
    response = gateway.post("/analyze", json=DEMO_BODY, headers={"X-Request-ID": "demo-123"})
    trace_id = trace_id_of(response)

    # Over OTLP, in the console, linked to the trace.
    logs = console.logs(
        trace_id,
        until=lambda logs: (
            {"analyze_response", "request_completed"}
            <= {log["body"] for log in logs if log["service_name"] == "api"}
        ),
    )
    api_logs = [log for log in logs if log["service_name"] == "api"]
    analyzed = next(log for log in api_logs if log["body"] == "analyze_response")
    assert analyzed["attributes"]["request_id"] == "demo-123"
    assert analyzed["attributes"]["sum"] == 14.0
    assert analyzed["attributes"]["difference"] == 7.0
    assert analyzed["severity_text"] == "INFO"
    assert analyzed["trace_id"] == trace_id

    completed = next(log for log in api_logs if log["body"] == "request_completed")
    assert completed["attributes"]["request_id"] == "demo-123"
    assert completed["attributes"]["method"] == "POST"
    assert completed["attributes"]["path"] == "/analyze"
    assert completed["attributes"]["status_code"] == 200
    assert completed["attributes"]["elapsed_ms"] >= 0

    # As JSON lines on the api's stderr, MicroTrace's own format.
    lines = _wait_for_log_lines(system, "api", "demo-123")
    line = next(
        entry
        for entry in lines
        if entry.get("message") == "analyze_response" and entry.get("trace_id") == trace_id
    )
    assert line["sum"] == 14.0 and line["difference"] == 7.0
    assert line["level"] == "INFO" and line["service"] == "api"
    done = next(
        entry
        for entry in lines
        if entry.get("message") == "request_completed" and entry.get("trace_id") == trace_id
    )
    assert done["method"] == "POST" and done["path"] == "/analyze" and done["status_code"] == 200


@pytest.mark.parametrize(
    "content",
    [
        '{"a": "10.5", "b": 3.5}',  # a string is not a number here
        '{"a": true, "b": 1}',
        '{"a": null, "b": 1}',
        '{"a": [1], "b": 1}',
        '{"a": 1}',
        "{}",
        "[]",
        '{"a": 1, "b": 2, "c": 3}',
        '{"a": NaN, "b": 1}',
        '{"a": Infinity, "b": 1}',
        '{"a": 1, "b": -Infinity}',
        '{"a": 1e308, "b": 1e308}',  # finite inputs, infinite sum
        "not json",
        "",
    ],
)
def test_bad_input_is_a_json_422(api: httpx.Client, content: str) -> None:
    response = api.post("/analyze", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()


def test_bad_input_through_the_gateway_is_422_too(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/analyze", content='{"a": NaN, "b": 1}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "a"]
