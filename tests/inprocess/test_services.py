"""Each service's routes in-process: the error paths and the answers' shapes, against the
real PostgreSQL and Valkey of the session, with telemetry in memory.

Dependencies that are down are real too: a loopback port nothing listens on.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from psycopg import sql

from otel_lab import db
from otel_lab.services import base
from otel_lab.services.api.app import create_app as create_api
from otel_lab.services.audit.app import create_app as create_audit
from otel_lab.services.gateway.app import create_app as create_gateway
from otel_lab.services.orders.app import create_app as create_orders
from otel_lab.services.users.app import create_app as create_users
from otel_lab.services.weather_upstream.app import behaviour_for, observe
from otel_lab.services.weather_upstream.app import create_app as create_weather_upstream
from otel_lab.telemetry import Telemetry
from tests.inprocess.conftest import (
    Recorded,
    closed_url,
    errors_total,
    run,
    served,
    settings_for,
)

pytestmark = pytest.mark.timeout(120)


def _call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with served(app) as client:
            return await client.request(method, path, **kwargs)

    return run(go())


def _exceptions(recorded: Recorded) -> list[str]:
    return [
        str((event.attributes or {}).get("exception.type"))
        for event in recorded.server_span().events
        if event.name == "exception"
    ]


# --------------------------------------------------------------------------- audit-service


def test_audit_refuses_simulations_when_they_are_off(recorded: Recorded, database_url: str) -> None:
    settings = settings_for(DATABASE_URL=database_url, CHAIN_SIMULATED_FAILURES="false")
    body = {"user_id": 1, "action": "x", "simulate_failure": "audit"}
    response = _call(create_audit(settings, recorded.telemetry), "POST", "/process", json=body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "simulate_failure is disabled (CHAIN_SIMULATED_FAILURES=false)",
        "error_type": "invalid_input",
        "request_id": response.headers["x-request-id"],
        "step": "request",
    }


def test_audit_simulated_failure_is_a_counted_500(recorded: Recorded, database_url: str) -> None:
    before = errors_total("simulated_failure")
    app = create_audit(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    body = {"user_id": 1, "action": "x", "simulate_failure": "audit"}
    response = _call(app, "POST", "/process", json=body)
    assert response.status_code == 500
    assert response.json()["step"] == "audit_logging"
    assert "simulated failure" in response.json()["detail"]
    assert recorded.server_span().status.status_code is StatusCode.ERROR
    assert [name.rsplit(".", 1)[-1] for name in _exceptions(recorded)] == ["SimulatedFailureError"]
    assert errors_total("simulated_failure") == before + 1


def test_audit_writes_once_per_key(recorded: Recorded, database_url: str) -> None:
    app = create_audit(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    key = uuid.uuid4().hex
    body = {"user_id": 7, "order_id": 9, "action": "buy", "order_total": 5.0, "item_count": 1}

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with served(app) as client:
            first = await client.post("/process", json=body, headers={"Idempotency-Key": key})
            again = await client.post("/process", json=body, headers={"Idempotency-Key": key})
            return first, again

    first, again = run(go())
    assert first.status_code == 200 and again.status_code == 200
    audit, replay = first.json()["audit"], again.json()["audit"]
    assert audit["status"] == "recorded" and audit["replayed"] is False
    assert replay["id"] == audit["id"] and replay["replayed"] is True
    assert audit["summary"]["chain"] == ["user-service", "order-service", "audit-service"]
    # The engine is traced to the app's providers: its statements are in this test's memory.
    statements = [s.name for s in recorded.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert any(name.startswith("INSERT") for name in statements), statements


def _posts(app: FastAPI, key: str, *bodies: dict[str, Any]) -> list[httpx.Response]:
    """``POST /process`` with each body in turn, all under the Idempotency-Key ``key``."""

    async def go() -> list[httpx.Response]:
        async with served(app) as client:
            headers = {"Idempotency-Key": key}
            return [await client.post("/process", json=b, headers=headers) for b in bodies]

    return run(go())


def _forget_fingerprint(database_url: str, table: str, key: str) -> None:
    """What a row written before migration 0003 looks like: no request fingerprint."""
    update = sql.SQL("UPDATE {} SET request_fingerprint = NULL WHERE idempotency_key = %s")
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        assert conn.execute(update.format(sql.Identifier(table)), (key,)).rowcount == 1


def _chain_app(factory: Any, recorded: Recorded, database_url: str) -> FastAPI:
    """audit- or order-service (audit-service down: the order's audit is deferred)."""
    settings = settings_for(
        DATABASE_URL=database_url, AUDIT_SERVICE_URL=closed_url(), DOWNSTREAM_RETRY_ATTEMPTS=1
    )
    app: FastAPI = factory(settings, recorded.telemetry)
    return app


def _stored_id(response: httpx.Response) -> int:
    """The audit row's or the order's id in a ``POST /process`` answer."""
    body = response.json()
    return int(body["order"]["id"] if "order" in body else body["audit"]["id"])


_AUDIT_BODY = {"user_id": 7, "order_id": 9, "action": "buy", "order_total": 5.0, "item_count": 1}
_ORDER_BODY = {"user_id": 1001, "action": "buy"}
REUSED = {
    "detail": "this Idempotency-Key was used for a different request: send that request "
    "again for its result, or use a new key for a new request",
    "error_type": "idempotency_key_reused",
}


@pytest.mark.parametrize(
    ("factory", "body", "changed", "same"),
    [
        (create_audit, _AUDIT_BODY, {"order_total": 6.0}, {}),
        (create_orders, _ORDER_BODY, {"action": "sell"}, {"user_tier": "gold"}),
        (
            create_orders,
            _ORDER_BODY,
            {"items": [{"sku": "SKU-MUG"}]},
            {"simulate_failure": "order_transient"},
        ),
    ],
)
def test_a_key_reused_for_another_request_is_a_422(
    recorded: Recorded,
    database_url: str,
    factory: Any,
    body: dict[str, Any],
    changed: dict[str, Any],
    same: dict[str, Any],
) -> None:
    """The IETF draft (section 2.7) and Stripe: a key reused with a different payload is a
    422, not the first request's result. The same request again still replays, also when
    only what a retry may change differs (``same``: the failure switch, the tier)."""
    app = _chain_app(factory, recorded, database_url)
    first, reused, again = _posts(
        app, uuid.uuid4().hex, body, {**body, **changed}, {**body, **same}
    )
    assert first.status_code == 200, first.text
    assert reused.status_code == 422, reused.text
    assert reused.json() == {**REUSED, "request_id": reused.headers["x-request-id"]}
    assert again.status_code == 200, again.text
    assert _stored_id(again) == _stored_id(first)


@pytest.mark.parametrize(
    ("factory", "body", "table"),
    [(create_audit, _AUDIT_BODY, "audit_logs"), (create_orders, _ORDER_BODY, "orders")],
)
def test_a_key_stored_without_a_fingerprint_still_replays(
    recorded: Recorded, database_url: str, factory: Any, body: dict[str, Any], table: str
) -> None:
    """Rows written before migration 0003 have no fingerprint: what they acknowledged
    stays theirs, and a retry gets it back, whatever its body."""
    app = _chain_app(factory, recorded, database_url)
    key = uuid.uuid4().hex
    (first,) = _posts(app, key, body)
    _forget_fingerprint(database_url, table, key)
    (again,) = _posts(app, key, {**body, "action": "other"})
    assert first.status_code == again.status_code == 200, again.text
    assert _stored_id(again) == _stored_id(first)


# --------------------------------------------------------------------------- order-service


def test_an_unknown_order_is_a_404_with_the_request_id(
    recorded: Recorded, database_url: str
) -> None:
    app = create_orders(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    response = _call(app, "GET", "/orders/2000000000")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "order 2000000000 not found",
        "error_type": "not_found",
        "request_id": response.headers["x-request-id"],
    }


def test_an_order_completes_with_the_audit_deferred_when_audit_is_down(
    recorded: Recorded, database_url: str
) -> None:
    settings = settings_for(
        DATABASE_URL=database_url, AUDIT_SERVICE_URL=closed_url(), DOWNSTREAM_RETRY_ATTEMPTS=1
    )
    app = create_orders(settings, recorded.telemetry)
    response = _call(app, "POST", "/process", json={"user_id": 1001, "action": "buy"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["audit"]["status"] == "deferred" and body["audit"]["service"] == "audit-service"
    assert body["order"]["audit_status"] == "deferred" and body["replayed"] is False
    order_id = body["order"]["id"]
    stored = _call(app, "GET", f"/orders/{order_id}")
    assert stored.status_code == 200 and stored.json()["audit_status"] == "deferred"


@pytest.mark.parametrize(
    ("simulation", "status", "error_type"),
    [("order", 500, "simulated_failure"), ("order_transient", 503, "simulated_transient_failure")],
)
def test_simulated_order_failures(
    recorded: Recorded, database_url: str, simulation: str, status: int, error_type: str
) -> None:
    before = errors_total(error_type)
    app = create_orders(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    body = {"user_id": 1001, "action": "buy", "simulate_failure": simulation}
    response = _call(
        app, "POST", "/process", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status_code == status
    assert response.json()["error_type"] == error_type
    assert response.json()["step"] == "order_creation"
    assert errors_total(error_type) == before + 1


# --------------------------------------------------------------------------- user-service


def test_user_not_found_and_conflict(recorded: Recorded, database_url: str) -> None:
    app = create_users(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    email = f"{uuid.uuid4().hex[:12]}@example.com"

    async def go() -> list[httpx.Response]:
        async with served(app) as client:
            return [
                await client.get("/users/999999"),
                await client.post("/users", json={"name": "A", "email": email}),
                await client.post("/users", json={"name": "B", "email": email}),
            ]

    missing, created, taken = run(go())
    assert missing.status_code == 404
    assert missing.json()["detail"] == "user 999999 not found"
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    assert created.status_code == 201
    assert taken.status_code == 409
    assert taken.json()["detail"] == "a user with this email already exists"


def test_chain_unknown_user_fails_the_validation_step(
    recorded: Recorded, database_url: str
) -> None:
    app = create_users(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    response = _call(app, "POST", "/process", json={"user_id": 999_999, "action": "t"})
    assert response.status_code == 404
    assert response.json()["step"] == "user_validation"
    assert recorded.server_span().status.status_code is not StatusCode.ERROR


def test_chain_with_order_service_down_is_a_503_naming_it(
    recorded: Recorded, database_url: str
) -> None:
    settings = settings_for(
        DATABASE_URL=database_url, ORDER_SERVICE_URL=closed_url(), DOWNSTREAM_RETRY_ATTEMPTS=1
    )
    before = errors_total("downstream_unavailable")
    app = create_users(settings, recorded.telemetry)
    response = _call(app, "POST", "/process", json={"user_id": 1001, "action": "t"})
    assert response.status_code == 502
    body = response.json()
    assert body["service"] == "order-service" and body["step"] == "order_creation"
    assert body["detail"].startswith("order-service unavailable: connection failed")
    # Counted once, where the call failed; the request span is marked by the handler.
    assert errors_total("downstream_unavailable") == before + 1
    assert recorded.server_span().status.status_code is StatusCode.ERROR
    assert [name.rsplit(".", 1)[-1] for name in _exceptions(recorded)] == [
        "DownstreamUnavailableError"
    ]
    # The client is traced to the app's providers: the refused attempt is a CLIENT span here.
    (attempt,) = [
        s
        for s in recorded.spans.get_finished_spans()
        if s.kind is SpanKind.CLIENT and s.name == "POST"
    ]
    assert attempt.status.status_code is StatusCode.ERROR


# --------------------------------------------------------------------------- api


def _api(recorded: Recorded, database_url: str, redis_url: str, **values: Any) -> FastAPI:
    settings = settings_for(DATABASE_URL=database_url, REDIS_URL=redis_url, **values)
    return create_api(settings, recorded.telemetry)


def test_an_unknown_item_is_a_404_with_the_request_id(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    response = _call(_api(recorded, database_url, redis_url), "GET", "/items/2000000000")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "item 2000000000 not found",
        "error_type": "not_found",
        "request_id": response.headers["x-request-id"],
    }


def test_analyze_overflow_and_a_missing_city_are_422s(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    app = _api(recorded, database_url, redis_url)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with served(app) as client:
            overflow = await client.post("/analyze", json={"a": 1e308, "b": 1e308})
            return overflow, await client.get("/weather/")

    overflow, no_city = run(go())
    assert overflow.status_code == 422
    assert overflow.json()["detail"] == "result out of range: a and b are too large"
    assert no_city.status_code == 422
    assert no_city.json()["detail"] == "a city is required: GET /weather/{city}"


def test_weather_upstream_down_is_a_502_with_the_attempts(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    before = errors_total("upstream_unreachable")
    app = _api(
        recorded,
        database_url,
        redis_url,
        WEATHER_API_URL=closed_url(),
        WEATHER_MAX_RETRIES=1,
        WEATHER_BACKOFF_SECONDS=0,
    )
    response = _call(app, "GET", "/weather/London")
    assert response.status_code == 502
    body = response.json()
    assert body["error_type"] == "upstream_unreachable" and body["attempts"] == 2
    assert body["request_id"] == response.headers["x-request-id"]
    assert errors_total("upstream_unreachable") == before + 1
    # One CLIENT span per attempt, to the app's providers (test_manual_spans reads the
    # weather.fetch span around them).
    attempts = [s for s in recorded.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in attempts] == ["GET", "GET"]
    assert recorded.server_span().status.status_code is StatusCode.ERROR
    assert [name.rsplit(".", 1)[-1] for name in _exceptions(recorded)] == ["UpstreamFailure"]


def test_error_simulation_fails_as_asked(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    before = errors_total("simulated_error")
    app = _api(recorded, database_url, redis_url)
    response = _call(app, "GET", "/error-simulation", params={"probability": 1})
    assert response.status_code == 500
    assert response.json()["probability"] == 1.0
    assert response.json()["error_type"] == "simulated_error"
    assert errors_total("simulated_error") == before + 1


def test_a_database_that_is_down_is_a_503(
    recorded: Recorded, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Start-up waits up to db.WARM_UP_SECONDS (15 s) for a PostgreSQL that may still be
    # starting, then serves cold; each call below starts the app: give up at once instead.
    monkeypatch.setattr(base, "warm_up", functools.partial(db.warm_up, within=0.0))
    port = closed_url().rsplit(":", 1)[1]
    down = f"postgresql+psycopg://postgres@127.0.0.1:{port}/otel_lab"
    before = errors_total("database_unavailable")
    app = _api(recorded, down, redis_url)
    response = _call(app, "GET", "/items/1")
    assert response.status_code == 503
    assert response.json()["error_type"] == "database_unavailable"
    assert errors_total("database_unavailable") == before + 1
    assert recorded.server_span().status.status_code is StatusCode.ERROR
    ready = _call(app, "GET", "/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert ready.json()["checks"]["database"].startswith("unavailable")
    assert ready.json()["checks"]["cache"] == "ok"


# --------------------------------------------------------------------------- gateway


def test_gateway_unknown_path_and_unreachable_upstream(recorded: Recorded) -> None:
    settings = settings_for(API_URL=closed_url(), DOWNSTREAM_RETRY_ATTEMPTS=1)
    app = create_gateway(settings, recorded.telemetry)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with served(app) as client:
            return await client.get("/nowhere"), await client.get("/items/1")

    nowhere, unreachable = run(go())
    assert nowhere.status_code == 404
    assert nowhere.json()["detail"] == "no service owns /nowhere"
    assert "/process" in nowhere.json()["routes"] and nowhere.json()["api_prefix"] == "/api/v1"
    assert unreachable.status_code == 502
    assert unreachable.json()["service"] == "api" and unreachable.json()["step"] == "proxy"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/health", "GET"),
        ("POST", "/ready", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("TRACE", "/items/1", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    ],
)
def test_gateway_wrong_method_on_a_path_it_knows_is_a_405(
    recorded: Recorded, method: str, path: str, allow: str
) -> None:
    """The gateway's own paths with another method are a 405 naming what they take (it was
    a 404 "no service owns /health"); a method it does not proxy, on a proxied path, too."""
    app = create_gateway(settings_for(API_URL=closed_url()), recorded.telemetry)
    response = _call(app, method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    body = response.json()
    assert (body["detail"], body["error_type"]) == ("Method Not Allowed", "method_not_allowed")
    assert body["request_id"] == response.headers.get("x-request-id")  # /metrics has none
    assert _call(app, method, "/nowhere").status_code == 404


def test_gateway_body_limit(recorded: Recorded) -> None:
    settings = settings_for(API_URL=closed_url(), GATEWAY_MAX_BODY_BYTES=8)

    async def chunks() -> AsyncIterator[bytes]:  # streamed: no Content-Length to refuse
        yield b"x" * 5
        yield b"x" * 4

    for content in (b"x" * 9, chunks()):
        response = _call(
            create_gateway(settings, recorded.telemetry), "POST", "/analyze", content=content
        )
        assert response.status_code == 413
        assert response.json()["error_type"] == "payload_too_large"
        assert response.json()["detail"] == "request body larger than 8 bytes"


# --------------------------------------------------------------------------- weather upstream


def test_weather_upstream_simulations(recorded: Recorded) -> None:
    app = create_weather_upstream(settings_for(), recorded.telemetry)

    async def go() -> list[httpx.Response]:
        async with served(app) as client:
            return [
                await client.get("/v1/current", params={"city": city})
                for city in ("Paris", "error-404", "error-503", "invalid-x")
            ]

    ok, missing, failing, invalid = run(go())
    assert ok.json() == observe("Paris").model_dump()
    assert missing.status_code == 404 and missing.json()["error_type"] == "city_not_found"
    assert failing.status_code == 503 and failing.json()["detail"] == "simulated upstream failure"
    assert invalid.status_code == 200 and invalid.text.startswith("<html>")


def test_weather_upstream_behaviours() -> None:
    assert behaviour_for("slow-250").delay_seconds == 0.25
    assert behaviour_for("slow-x").delay_seconds == 10.0
    assert behaviour_for("slow-99999999").delay_seconds == 30.0
    assert behaviour_for("error-700").status_code == 500
    assert behaviour_for("Flaky-town").simulation == "flaky"
    assert behaviour_for("London").simulation == "none"
    assert observe("London") == observe("LONDON").model_copy(update={"city": "London"})


# --------------------------------------------------------------------------- OpenAPI


@pytest.mark.parametrize(
    ("factory", "path", "method"),
    [
        (create_users, "/process", "post"),
        (create_orders, "/process", "post"),
        (create_orders, "/orders/{order_id}", "get"),
        (create_audit, "/process", "post"),
        (create_api, "/analyze", "post"),
        (create_api, "/weather/{city}", "get"),
        (create_api, "/error-simulation", "get"),
    ],
)
def test_every_route_has_a_success_schema(
    recorded: Recorded, factory: Any, path: str, method: str
) -> None:
    spec = factory(settings_for(), recorded.telemetry).openapi()
    operation = spec["paths"][path][method]
    success = next(code for code in operation["responses"] if code.startswith("2"))
    schema = operation["responses"][success]["content"]["application/json"]["schema"]
    assert "$ref" in schema or schema.get("type") == "array", schema


# --------------------------------------------------------------------------- telemetry off


def test_the_sdk_disabled_keeps_request_ids_the_request_log_and_metrics(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """``OTEL_SDK_DISABLED=true`` switches the OpenTelemetry SDK off, not the service's own
    request IDs, JSON request log line and Prometheus series."""
    caplog.set_level(logging.INFO, logger="otel_lab.request")
    labels = {"method": "GET", "path": "/health", "status": "200"}
    before = REGISTRY.get_sample_value("requests_total", labels) or 0.0
    app = create_weather_upstream(settings_for(), Telemetry(enabled=False))
    response = _call(app, "GET", "/health", headers={"x-request-id": "sdk-off-1"})

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "sdk-off-1"
    assert "traceresponse" not in response.headers  # no trace to point to
    assert REGISTRY.get_sample_value("requests_total", labels) == before + 1
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if "sdk-off-1" in line
    ]
    assert [line["message"] for line in lines] == ["request_completed"]
    assert lines[0]["service"] == "weather-upstream" and lines[0]["status_code"] == 200
    assert "trace_id" not in lines[0]
