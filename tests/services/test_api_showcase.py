"""The enhanced tracing showcase endpoints: ``/hello``, ``/error-simulation``, ``/db-operation`` and
``/complex-operation``, with the span trees, attributes and metrics the showcase lists."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import (
    Console,
    Span,
    children_of,
    served,
    server_above,
    span_named,
    trace_id_of,
)


def _metric_value(text: str, series: str) -> float:
    """One sample from the OpenMetrics text, by its exact name and labels (0 if absent)."""
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == series:
            return float(rest.split(" ")[0])
    return 0.0


def _has_span(name: str, service: str = "api") -> Callable[[list[Span]], bool]:
    return lambda spans: any(s["name"] == name and s["service_name"] == service for s in spans)


def _all(*checks: Callable[[list[Span]], bool]) -> Callable[[list[Span]], bool]:
    return lambda spans: all(check(spans) for check in checks)


# --------------------------------------------------------------------------- /hello


def test_hello_through_the_gateway(gateway: httpx.Client, console: Console) -> None:
    response = gateway.get("/hello")
    assert response.status_code == 200
    assert response.json() == {"message": "Hello, World!"}
    assert gateway.get("/hello", params={"name": "Ada"}).json() == {"message": "Hello, Ada!"}

    spans = console.trace(
        trace_id_of(response), until=_all(_has_span("hello"), _has_span("GET /hello"))
    )
    hello = span_named(spans, "hello", "api")
    assert hello["attributes"]["api.operation"] == "hello"
    assert hello["attributes"]["operation.type"] == "simple"
    assert hello["attributes"]["service.name"] == "api"
    server = server_above(spans, hello)
    assert server["name"] == "GET /hello" and server["service_name"] == "api"


@pytest.mark.parametrize("name", ["", "<script>", "x" * 65, "_underscore", "a\nb"])
def test_hello_bad_name_is_422(api: httpx.Client, name: str) -> None:
    response = api.get("/hello", params={"name": name})
    assert response.status_code == 422
    assert "detail" in response.json()


# --------------------------------------------------------------------------- /error-simulation


def test_error_simulation_always_failing(
    gateway: httpx.Client, api: httpx.Client, console: Console
) -> None:
    before = _metric_value(api.get("/metrics").text, 'errors_total{error_type="simulated_error"}')
    response = gateway.get("/error-simulation", params={"probability": 1})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_type"] == "simulated_error"
    assert body["probability"] == 1.0
    assert "simulated failure" in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text

    spans = console.trace(
        trace_id_of(response),
        until=_all(_has_span("error_simulation"), _has_span("GET /error-simulation")),
    )
    simulated = span_named(spans, "error_simulation", "api")
    assert simulated["status"]["code"] == "ERROR"
    assert simulated["attributes"]["error.probability"] == 1.0
    assert simulated["attributes"]["error.simulated"] is True
    assert simulated["attributes"]["api.operation"] == "error-simulation"
    [exception] = [e for e in simulated["events"] if e["name"] == "exception"]
    assert exception["attributes"]["exception.type"].endswith("SimulatedError")
    assert "probability 1.0" in exception["attributes"]["exception.message"]

    server = server_above(spans, simulated)
    assert server["name"] == "GET /error-simulation" and server["service_name"] == "api"
    assert server["status"]["code"] == "ERROR"
    assert server["attributes"]["http.response.status_code"] == 500

    after = _metric_value(api.get("/metrics").text, 'errors_total{error_type="simulated_error"}')
    assert after == before + 1


def test_error_simulation_never_failing(api: httpx.Client, console: Console) -> None:
    response = api.get("/error-simulation", params={"probability": 0})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "probability": 0.0}
    spans = console.trace(trace_id_of(response), until=_has_span("error_simulation"))
    simulated = span_named(spans, "error_simulation", "api")
    assert simulated["status"]["code"] != "ERROR"
    assert simulated["attributes"]["error.probability"] == 0.0
    assert simulated["attributes"]["error.simulated"] is False
    assert not simulated["events"]


def test_error_simulation_default_rate_gives_both_outcomes(api: httpx.Client) -> None:
    """ERROR_SIMULATION_RATE defaults to 0.5: 40 tries all alike would be a 1 in 5e11 fluke."""
    statuses = {api.get("/error-simulation").status_code for _ in range(40)}
    assert statuses == {200, 500}


@pytest.mark.parametrize("probability", ["2", "-0.1", "nan", "inf", "abc", ""])
def test_error_simulation_bad_probability_is_422(api: httpx.Client, probability: str) -> None:
    response = api.get("/error-simulation", params={"probability": probability})
    assert response.status_code == 422
    assert "detail" in response.json()


# --------------------------------------------------------------------------- /db-operation


def test_db_operation_span_tree(gateway: httpx.Client, api: httpx.Client, console: Console) -> None:
    response = gateway.get("/db-operation", params={"rows": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database"] == {"system": "postgresql", "name": "otel_lab"}
    assert [op["operation"] for op in body["operations"]] == [
        "insert",
        "select",
        "update",
        "delete",
    ]
    assert all(op["rows"] == 2 for op in body["operations"])
    assert len(body["item_ids"]) == 2

    spans = console.trace(trace_id_of(response), until=served("api"))
    root = span_named(spans, "db_operation", "api")
    assert root["attributes"]["api.operation"] == "db-operation"
    assert root["attributes"]["operation.type"] == "database"
    assert root["attributes"]["database.system"] == "postgresql"
    assert root["attributes"]["database.name"] == "otel_lab"
    assert root["attributes"]["service.name"] == "api"
    server = server_above(spans, root)
    assert server["name"] == "GET /db-operation" and server["service_name"] == "api"

    steps = children_of(spans, root)
    assert [s["name"] for s in steps] == [
        "db_operation.insert",
        "db_operation.select",
        "db_operation.update",
        "db_operation.delete",
    ]
    for step in steps:
        verb = step["name"].rsplit(".", 1)[1].upper()
        assert step["attributes"]["operation.type"] == "database"
        assert step["attributes"]["database.system"] == "postgresql"
        assert step["attributes"]["db.operation.name"] == verb
        statements = [s for s in children_of(spans, step) if s["kind"] == "CLIENT"]
        assert any(s["name"].startswith(verb) for s in statements), (step["name"], statements)
        assert all(
            s["attributes"].get("db.system", s["attributes"].get("db.system.name")) == "postgresql"
            for s in statements
        )

    # The scratch rows were deleted in the same transaction: nothing is left behind.
    for item_id in body["item_ids"]:
        assert api.get(f"/items/{item_id}").status_code == 404


def test_db_operation_is_timed_by_statement(api: httpx.Client) -> None:
    def count(verb: str) -> float:
        text = api.get("/metrics").text
        return _metric_value(text, f'db_operation_seconds_count{{operation="{verb}"}}')

    before = {verb: count(verb) for verb in ("INSERT", "UPDATE", "DELETE")}
    assert api.get("/db-operation").status_code == 200
    for verb, value in before.items():
        assert count(verb) >= value + 1, verb


@pytest.mark.parametrize("rows", ["0", "11", "abc", "1.5", "-1"])
def test_db_operation_bad_rows_is_422(api: httpx.Client, rows: str) -> None:
    response = api.get("/db-operation", params={"rows": rows})
    assert response.status_code == 422
    assert "detail" in response.json()


# --------------------------------------------------------------------------- /complex-operation


def test_complex_operation_nests_four_levels(gateway: httpx.Client, console: Console) -> None:
    response = gateway.get("/complex-operation", params={"user_id": 42, "steps": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == 42
    assert [step["index"] for step in body["steps"]] == [1, 2, 3]
    assert body["result"]["total"] == pytest.approx(sum(s["value"] for s in body["steps"]), 0.01)
    again = gateway.get("/complex-operation", params={"user_id": 42, "steps": 3}).json()
    assert again["result"] == body["result"], "same user, same result"

    spans = console.trace(trace_id_of(response), until=served("api"))
    root = span_named(spans, "complex_operation", "api")
    assert root["attributes"]["user.id"] == 42
    assert root["attributes"]["api.operation"] == "complex-operation"
    assert root["attributes"]["operation.type"] == "composite"
    assert root["attributes"]["service.name"] == "api"
    server = server_above(spans, root)
    assert server["name"] == "GET /complex-operation" and server["service_name"] == "api"

    level2 = children_of(spans, root)
    assert [s["name"] for s in level2] == [
        "complex_operation.validation",
        "complex_operation.processing",
        "complex_operation.aggregation",
    ]
    processing = level2[1]
    steps = children_of(spans, processing)
    assert [s["attributes"]["step.index"] for s in steps] == [1, 2, 3]
    assert all(s["name"] == "complex_operation.step" for s in steps)
    for step in steps:
        [transform] = children_of(spans, step)
        assert transform["name"] == "complex_operation.step.transform"
        assert transform["attributes"]["operation.type"] == "transform"
    aggregation = level2[2]
    assert aggregation["attributes"]["result.total"] == body["result"]["total"]


@pytest.mark.parametrize(
    "params",
    [
        {"user_id": 0},
        {"user_id": -5},
        {"user_id": "abc"},
        {"user_id": 2**31},
        {"steps": 0},
        {"steps": 99},
        {"steps": "many"},
    ],
)
def test_complex_operation_bad_input_is_422(api: httpx.Client, params: dict) -> None:
    response = api.get("/complex-operation", params=params)
    assert response.status_code == 422
    assert "detail" in response.json()


# --------------------------------------------------------------------------- showcase metrics


def test_documented_metrics_are_exposed(api: httpx.Client) -> None:
    """REQUEST_TIME, DB_OPERATION_TIME, API_OPERATION_TIME, ERROR_COUNTER, REQUEST_COUNTER,
    REQUEST_LATENCY and CONCURRENT_REQUESTS, by their names here (docs/instrumentation.md)."""
    api.get("/hello")
    api.get("/db-operation")
    # A labelled counter has no sample (and no `errors_total` line) before its first error.
    assert api.get("/error-simulation", params={"probability": 1}).status_code == 500
    text = api.get("/metrics").text
    for family in (
        "requests_total",
        "request_latency_seconds_bucket",
        "request_latency_seconds_sum",  # REQUEST_TIME's sum and count
        "errors_total",
        "concurrent_requests",
        "db_operation_seconds_bucket",
        "api_operation_seconds",
    ):
        assert family in text, family
    assert _metric_value(text, 'requests_total{method="GET",path="/hello",status="200"}') >= 1
