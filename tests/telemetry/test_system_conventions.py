"""Logs against the running system: trace context in the OTLP record's own fields, and the
request ID carried through the broker to the worker's log lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from otel_lab.registry import CHAIN
from otel_lab.runtime.harness import RunningSystem
from tests.conftest import Console, served, trace_id_of


def _wait_for_lines(
    system: RunningSystem, name: str, wanted: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The JSON lines of a child's log that ``wanted`` accepts, polled for up to 20 s."""
    deadline = time.monotonic() + 20
    while True:
        found = [line for line in system.log_records(name) if wanted(line)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_the_request_id_reaches_the_workers_logs(
    api: httpx.Client, console: Console, system: RunningSystem
) -> None:
    response = api.post(
        "/items", json={"name": "carried id"}, headers={"X-Request-ID": "rid-to-the-worker"}
    )
    assert response.status_code in (200, 201)
    trace_id = trace_id_of(response)

    enriched = _wait_for_lines(
        system,
        "worker",
        lambda line: line.get("message") == "item_enriched" and line.get("trace_id") == trace_id,
    )
    assert enriched, "the worker logged the enrichment of the item"
    assert enriched[0]["request_id"] == "rid-to-the-worker"

    logs = console.logs(
        trace_id,
        until=lambda logs: any(
            log["service_name"] == "worker" and log["body"] == "item_enriched" for log in logs
        ),
    )
    record = next(log for log in logs if log["body"] == "item_enriched")
    assert record["attributes"]["request_id"] == "rid-to-the-worker"
    assert record["trace_id"] == trace_id and len(record["span_id"]) == 16
    # The trace context and the service are the record's own fields and its resource's,
    # not repeated as attributes.
    assert not {"trace_id", "span_id", "service"} & set(record["attributes"])


def test_the_access_line_is_on_stderr_and_in_the_console_from_the_span(
    api: httpx.Client, console: Console, system: RunningSystem
) -> None:
    response = api.get("/items/999999", headers={"X-Request-ID": "rid-access-404"})
    assert response.status_code == 404
    trace_id = trace_id_of(response)
    logs = console.logs(
        trace_id, until=lambda logs: any(log["body"] == "request_completed" for log in logs)
    )
    completed = next(log for log in logs if log["body"] == "request_completed")
    assert completed["attributes"] == {
        "method": "GET",
        "path": "/items/{item_id}",
        "status_code": 404,
        "elapsed_ms": completed["attributes"]["elapsed_ms"],
        "request_id": "rid-access-404",
        "derived_from": "server span",
    }
    assert completed["severity_text"] == "INFO" and completed["service_name"] == "api"

    lines = _wait_for_lines(
        system,
        "api",
        lambda line: (
            line.get("request_id") == "rid-access-404"
            and line.get("message") == "request_completed"
        ),
    )
    assert lines, "the access line reached the api's stderr"
    line = lines[0]
    assert (line["method"], line["path"], line["status_code"]) == ("GET", "/items/{item_id}", 404)
    assert line["trace_id"] == trace_id and line["level"] == "INFO" and line["service"] == "api"
    assert line["logger"] == "otel_lab.request" and "timestamp" in line


def test_database_spans_use_the_stable_conventions(gateway: httpx.Client, console: Console) -> None:
    response = gateway.post("/api/v1/process", json={"user_id": 1001, "action": "semconv"})
    assert response.status_code == 200
    spans = console.trace(trace_id_of(response), until=served(*CHAIN))
    database = [s for s in spans if s["attributes"].get("db.system.name") == "postgresql"]
    statements = [s for s in database if s["name"] != "connect"]
    assert statements
    for span in statements:
        assert "db.query.text" in span["attributes"]
    for span in database:
        assert not {"db.system", "db.statement", "db.name"} & set(span["attributes"])
