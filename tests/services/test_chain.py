"""The service chain through the gateway: gateway -> user-service -> order-service -> audit-service.

The chain's documented curl requests with their responses, then HotROD-style trace checks: take the
trace id from ``traceresponse``, read the trace back from the console and assert its
shape (services, parent/child links, DB spans, baggage attributes), the error path, the
retry, the audit fallback and the circuit breaker.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from otel_lab.registry import CHAIN
from otel_lab.runtime.harness import RunningSystem
from tests.conftest import Console, Span, ancestors, span_named, trace_id_of

CHAIN_SERVICES = ("gateway", *CHAIN)


# --------------------------------------------------------------------------- helpers


def _process(gateway: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return gateway.post("/api/v1/process", json=body, headers=headers)


def _descends_from(spans: list[Span], span: Span, ancestor: Span) -> bool:
    return any(a["span_id"] == ancestor["span_id"] for a in ancestors(spans, span))


def _of(spans: list[Span], service: str, kind: str | None = None) -> list[Span]:
    return [
        s for s in spans if s["service_name"] == service and (kind is None or s["kind"] == kind)
    ]


def _db_spans(spans: list[Span], service: str) -> list[Span]:
    return [
        s
        for s in _of(spans, service, "CLIENT")
        if s["attributes"].get("db.system.name", s["attributes"].get("db.system")) == "postgresql"
    ]


def _has_span(name: str, service: str):
    return lambda spans: any(s["name"] == name and s["service_name"] == service for s in spans)


def _served(spans: list[Span], service: str) -> bool:
    """The service's request span is in: it ends last in its process, so its batch, and
    every earlier one of that process, has been exported."""
    return any("request.id" in s["attributes"] for s in _of(spans, service, "SERVER"))


def _complete_chain(spans: list[Span]) -> bool:
    return all(_served(spans, service) for service in CHAIN_SERVICES)


def _exception_events(span: Span) -> list[dict[str, Any]]:
    return [e for e in span["events"] if e["name"] == "exception"]


def _breaker_gauge(metrics_text: str, downstream: str) -> float | None:
    match = re.search(
        rf'^circuit_breaker_state\{{downstream="{re.escape(downstream)}"\}} (\S+)$',
        metrics_text,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else None


# --------------------------------------------------------------------------- documented requests


def test_documented_simple_request(gateway: httpx.Client) -> None:
    """``curl -X POST :8080/api/v1/process -d '{"user_id": 1001, "action": "test_trace"}'``."""
    response = _process(gateway, {"user_id": 1001, "action": "test_trace"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["trace_id"] == trace_id_of(response)
    assert body["user"]["id"] == 1001 and body["user"]["tier"] == "premium"
    order = body["order"]
    assert order["user_id"] == 1001 and order["action"] == "test_trace"
    assert order["item_count"] == len(order["items"]) >= 1
    assert order["total"] == pytest.approx(order["subtotal"] - order["discount"] + order["tax"])
    assert order["audit_status"] == "recorded"
    assert body["audit"]["status"] == "recorded"
    assert body["audit"]["summary"]["order_id"] == order["id"]
    assert body["chain"] == ["user-service", "order-service", "audit-service"]


def test_documented_full_request_with_name_and_email(gateway: httpx.Client) -> None:
    response = _process(
        gateway,
        {
            "user_id": 1001,
            "user_name": "John Doe",
            "user_email": "john@example.com",
            "action": "purchase",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["user"]["name"] == "John Doe" and body["user"]["email"] == "john@example.com"
    assert body["order"]["action"] == "purchase"


def test_documented_loop_over_demo_users_1001_to_1010(gateway: httpx.Client) -> None:
    """The documented ``for i in {1..10}`` loop works on a fresh start (seeded demo users)."""
    for i in range(1, 11):
        response = _process(gateway, {"user_id": 1000 + i, "action": f"test_{i}"})
        assert response.status_code == 200, (i, response.text)
        body = response.json()
        assert body["user"]["id"] == 1000 + i
        assert body["order"]["user_id"] == 1000 + i
        assert body["order"]["action"] == f"test_{i}"
        assert body["audit"]["status"] == "recorded"


def test_documented_service_endpoints(gateway: httpx.Client, system: RunningSystem) -> None:
    """Each service's own documented endpoints, on its own port and through the gateway."""
    order = _process(gateway, {"user_id": 1004, "action": "endpoints"}).json()["order"]
    for service in ("user-service", "order-service", "audit-service"):
        health = httpx.get(system.url(service) + "/health")
        assert health.json() == {"status": "ok", "service": service}

    users = gateway.get("/api/v1/users").json()
    assert {1001, 1010} <= {user["id"] for user in users}
    assert gateway.get("/api/v1/users/1004").json()["name"] == "Bob Brown"

    direct = httpx.get(f"{system.url('order-service')}/orders/{order['id']}").json()
    via_gateway = gateway.get(f"/api/v1/orders/{order['id']}").json()
    assert direct == via_gateway and direct["items"] == order["items"]
    listed = gateway.get("/api/v1/orders", params={"user_id": 1004}).json()
    assert order["id"] in {o["id"] for o in listed}

    audit = gateway.get("/api/v1/audit", params={"order_id": order["id"]}).json()
    assert len(audit) == 1 and audit[0]["user_id"] == 1004 and audit[0]["action"] == "endpoints"


def test_user_by_email_is_created_on_first_sight(gateway: httpx.Client) -> None:
    email = f"first-{uuid.uuid4().hex[:8]}@example.com"
    body = {"user_name": "First Sight", "user_email": email, "action": "signup"}
    first = _process(gateway, body)
    assert first.status_code == 200, first.text
    user = first.json()["user"]
    assert user["email"] == email and user["id"] > 1010
    again = _process(gateway, body).json()["user"]
    assert again["id"] == user["id"]


def test_unknown_user_fails_validation_step(gateway: httpx.Client) -> None:
    response = _process(gateway, {"user_id": 999_999, "action": "test_trace"})
    assert response.status_code == 404
    assert response.json()["step"] == "user_validation"


def test_idempotency_key_returns_the_same_order(gateway: httpx.Client) -> None:
    key = f"test-{uuid.uuid4().hex}"
    first = _process(gateway, {"user_id": 1005, "action": "idem"}, **{"Idempotency-Key": key})
    second = _process(gateway, {"user_id": 1005, "action": "idem"}, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 200
    assert first.json()["order"]["id"] == second.json()["order"]["id"]
    assert first.json()["audit"]["id"] == second.json()["audit"]["id"]
    assert second.json()["audit"]["replayed"] is True


def test_idempotency_key_reused_for_another_request_is_a_422(gateway: httpx.Client) -> None:
    """The key reused with another action: order-service finds its order was another
    request's, and user-service passes that 422 on to the client (not a 502: the client's
    mistake, not order-service failing). No second order; the first request still replays."""
    key = f"test-{uuid.uuid4().hex}"
    first = _process(gateway, {"user_id": 1006, "action": "idem"}, **{"Idempotency-Key": key})
    reused = _process(gateway, {"user_id": 1006, "action": "other"}, **{"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    assert reused.status_code == 422, reused.text
    body = reused.json()
    assert body["error_type"] == "idempotency_key_reused", body
    assert body["service"] == "order-service" and body["step"] == "order_creation", body
    assert "different request" in body["detail"]
    again = _process(gateway, {"user_id": 1006, "action": "idem"}, **{"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["order"] == first.json()["order"]


# --------------------------------------------------------------------------- traces


def test_chain_is_one_trace_across_four_services(gateway: httpx.Client, console: Console) -> None:
    response = _process(gateway, {"user_id": 1001, "action": "test_trace"})
    assert response.status_code == 200
    trace_id = trace_id_of(response)
    spans = console.trace(trace_id, until=_complete_chain)
    assert {s["trace_id"] for s in spans} == {trace_id}

    # The trace starts at the gateway.
    gateway_server = span_named(spans, "POST /api/v1/process", "gateway")
    assert gateway_server["kind"] == "SERVER" and gateway_server["parent_span_id"] is None
    assert any(
        s["attributes"].get("gateway.upstream") == "user-service" for s in _of(spans, "gateway")
    )

    # Each hop: the callee's SERVER span is the child of the caller's CLIENT span.
    hops = [("gateway", "user-service"), ("user-service", "order-service"),
            ("order-service", "audit-service")]  # fmt: skip
    for caller, callee in hops:
        clients = {s["span_id"]: s for s in _of(spans, caller, "CLIENT")}
        servers = [s for s in _of(spans, callee, "SERVER") if s["parent_span_id"] in clients]
        assert servers, f"no {callee} SERVER span under a {caller} CLIENT span"
        assert servers[0]["attributes"]["http.route"] == "/process"
        client = clients[servers[0]["parent_span_id"]]
        assert client["attributes"]["http.response.status_code"] == 200

    # The business steps, each under its service's request, in order of the chain.
    validation = span_named(spans, "user_validation", "user-service")
    enrichment = span_named(spans, "profile_enrichment", "user-service")
    call_orders = span_named(spans, "order-service order_creation", "user-service")
    order_creation = span_named(spans, "order_creation", "order-service")
    pricing = span_named(spans, "pricing", "order-service")
    call_audit = span_named(spans, "audit-service audit_logging", "order-service")
    audit_write = span_named(spans, "audit_log_write", "audit-service")
    for step in (validation, enrichment, call_orders):
        assert _descends_from(spans, step, gateway_server)
    assert _descends_from(spans, order_creation, call_orders)
    assert _descends_from(spans, pricing, order_creation)
    assert _descends_from(spans, call_audit, call_orders)
    assert _descends_from(spans, audit_write, call_audit)
    assert call_orders["attributes"]["peer.service"] == "order-service"
    assert call_orders["attributes"]["circuit_breaker.state"] == "closed"
    assert call_orders["attributes"]["retry.attempts"] == 1

    # PostgreSQL spans under every service's own work.
    assert any(_descends_from(spans, s, validation) for s in _db_spans(spans, "user-service"))
    assert any(_descends_from(spans, s, order_creation) for s in _db_spans(spans, "order-service"))
    assert any(_descends_from(spans, s, audit_write) for s in _db_spans(spans, "audit-service"))

    # Item-level pricing attributes.
    order = response.json()["order"]
    items = [s for s in spans if s["name"] == "price_item"]
    assert len(items) == order["item_count"]
    for span in items:
        assert _descends_from(spans, span, pricing)
        attributes = span["attributes"]
        assert attributes["order.item.line_total"] == pytest.approx(
            attributes["order.item.unit_price"] * attributes["order.item.quantity"]
        )
    assert {s["attributes"]["order.item.sku"] for s in items} == {i["sku"] for i in order["items"]}
    assert pricing["attributes"]["order.total"] == pytest.approx(order["total"])


def test_baggage_carries_user_context_but_no_personal_data(
    gateway: httpx.Client, console: Console
) -> None:
    response = _process(
        gateway,
        {"user_id": 1001, "user_name": "John Doe", "user_email": "john@example.com",
         "action": "purchase"},
    )  # fmt: skip
    assert response.status_code == 200
    spans = console.trace(trace_id_of(response), until=_complete_chain)

    # Set at the user service once the user is known; every span downstream carries it.
    downstream = _of(spans, "order-service") + _of(spans, "audit-service")
    assert downstream
    for span in downstream:
        assert span["attributes"].get("user.id") == "1001", span["name"]
        assert span["attributes"].get("action") == "purchase", span["name"]
    call_orders = span_named(spans, "order-service order_creation", "user-service")
    assert call_orders["attributes"]["user.id"] == "1001"

    # Name and email stay out of every span (TELEMETRY_RECORD_PII is off by default).
    for span in spans:
        assert not {"user.name", "user.email"} & set(span["attributes"]), span["name"]
        values = " ".join(str(v) for v in span["attributes"].values())
        assert "john@example.com" not in values and "John Doe" not in values, span["name"]


def test_request_id_travels_the_whole_chain(gateway: httpx.Client, console: Console) -> None:
    request_id = f"chain-{uuid.uuid4().hex[:12]}"
    response = _process(
        gateway, {"user_id": 1002, "action": "req_id"}, **{"X-Request-ID": request_id}
    )
    assert response.headers["x-request-id"] == request_id
    spans = console.trace(trace_id_of(response), until=_complete_chain)
    for service in CHAIN_SERVICES:
        servers = _of(spans, service, "SERVER")
        assert any(s["attributes"].get("request.id") == request_id for s in servers), service


def test_order_failure_crosses_services_as_an_error(
    gateway: httpx.Client, console: Console
) -> None:
    response = _process(gateway, {"user_id": 1003, "action": "fail", "simulate_failure": "order"})
    assert response.status_code == 502
    body = response.json()
    assert body["step"] == "order_creation" and body["service"] == "order-service"
    assert body["detail"].startswith("order-service failed: simulated failure in order creation")

    spans = console.trace(
        trace_id_of(response),
        until=lambda spans: all(
            _served(spans, service) for service in ("gateway", "user-service", "order-service")
        ),
    )

    # Where it happened: the order step, with the exception recorded.
    failed = span_named(spans, "order_creation", "order-service")
    assert failed["status"]["code"] == "ERROR"
    (event,) = _exception_events(failed)
    assert event["attributes"]["exception.type"].endswith("SimulatedFailureError")
    assert "simulated failure" in event["attributes"]["exception.message"]
    assert any(s["status"]["code"] == "ERROR" for s in _of(spans, "order-service", "SERVER"))

    # The caller's view: the downstream call failed, recorded with the downstream's answer.
    call = span_named(spans, "order-service order_creation", "user-service")
    assert call["status"]["code"] == "ERROR"
    (event,) = _exception_events(call)
    assert event["attributes"]["exception.type"].endswith("DownstreamHTTPError")
    assert call["attributes"]["http.response.status_code"] == 500
    assert call["attributes"]["retry.attempts"] == 1  # a 500 is not transient
    assert any(s["status"]["code"] == "ERROR" for s in _of(spans, "user-service", "SERVER"))
    gateway_server = span_named(spans, "POST /api/v1/process", "gateway")
    assert gateway_server["status"]["code"] == "ERROR"
    assert gateway_server["attributes"]["http.response.status_code"] == 502
    assert not _has_span("audit_log_write", "audit-service")(spans)


def test_transient_failure_is_retried_with_backoff(gateway: httpx.Client, console: Console) -> None:
    body = {"user_id": 1006, "action": "flaky", "simulate_failure": "order_transient"}
    response = _process(gateway, body)
    assert response.status_code == 200, response.text
    assert response.json()["audit"]["status"] == "recorded"

    spans = console.trace(trace_id_of(response), until=_complete_chain)
    call = span_named(spans, "order-service order_creation", "user-service")
    assert call["status"]["code"] != "ERROR"
    assert call["attributes"]["retry.attempts"] == 2
    (retry,) = [e for e in call["events"] if e["name"] == "retry"]
    assert retry["attributes"]["retry.reason"] == "status_503"
    assert retry["attributes"]["retry.delay_s"] > 0
    attempts = [
        s for s in _of(spans, "user-service", "CLIENT") if s["parent_span_id"] == call["span_id"]
    ]
    assert sorted(s["attributes"]["http.response.status_code"] for s in attempts) == [200, 503]
    # One order despite two attempts: the retry carried the same Idempotency-Key.
    assert len([s for s in spans if s["name"] == "pricing"]) == 1


def test_audit_outage_defers_the_audit_and_completes_the_order(
    gateway: httpx.Client, console: Console
) -> None:
    key = f"test-{uuid.uuid4().hex}"
    body = {"user_id": 1007, "action": "deferred", "simulate_failure": "audit"}
    response = _process(gateway, body, **{"Idempotency-Key": key})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed"
    assert result["order"]["audit_status"] == "deferred"
    assert result["audit"]["status"] == "deferred"
    assert result["audit"]["step"] == "audit_logging"
    assert result["audit"]["service"] == "audit-service"

    spans = console.trace(
        trace_id_of(response),
        until=_complete_chain,
    )
    write = span_named(spans, "audit_log_write", "audit-service")
    assert write["status"]["code"] == "ERROR" and _exception_events(write)
    call = span_named(spans, "audit-service audit_logging", "order-service")
    assert call["status"]["code"] == "ERROR" and _exception_events(call)
    deferred = [
        e for s in _of(spans, "order-service") for e in s["events"] if e["name"] == "audit.deferred"
    ]
    assert deferred and deferred[0]["attributes"]["downstream"] == "audit-service"
    for server in _of(spans, "order-service", "SERVER"):
        assert server["status"]["code"] != "ERROR"  # the fallback handled it

    order_id = result["order"]["id"]
    assert gateway.get(f"/api/v1/orders/{order_id}").json()["audit_status"] == "deferred"
    assert gateway.get("/api/v1/audit", params={"order_id": order_id}).json() == []

    # Calling again with the same key writes the deferred audit; the order stays one.
    again = _process(gateway, {"user_id": 1007, "action": "deferred"}, **{"Idempotency-Key": key})
    assert again.json()["order"]["id"] == order_id
    assert again.json()["audit"]["status"] == "recorded"
    assert gateway.get(f"/api/v1/orders/{order_id}").json()["audit_status"] == "recorded"
    assert len(gateway.get("/api/v1/audit", params={"order_id": order_id}).json()) == 1


def test_circuit_breaker_opens_after_repeated_failures_and_recovers(
    gateway: httpx.Client, console: Console, system: RunningSystem
) -> None:
    """Five consecutive order failures open user-service's breaker to order-service: the
    next call is refused without trying (503, Retry-After), visible as the span attribute
    and the gauge; after the cool-down one trial call closes it again."""
    metrics_url = system.url("user-service") + "/metrics"
    ok = {"user_id": 1008, "action": "breaker_ok"}
    assert _process(gateway, ok).status_code == 200  # closed, failure count reset
    assert _breaker_gauge(httpx.get(metrics_url).text, "order-service") == 0

    failing = {"user_id": 1008, "action": "breaker", "simulate_failure": "order"}
    try:
        for _ in range(5):
            assert _process(gateway, failing).status_code == 502

        refused = _process(gateway, ok)
        assert refused.status_code == 503
        body = refused.json()
        assert body["step"] == "order_creation" and body["service"] == "order-service"
        assert "circuit open" in body["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        assert _breaker_gauge(httpx.get(metrics_url).text, "order-service") == 2

        spans = console.trace(
            trace_id_of(refused),
            until=lambda spans: _served(spans, "user-service") and _served(spans, "gateway"),
        )
        call = span_named(spans, "order-service order_creation", "user-service")
        assert call["attributes"]["circuit_breaker.state"] == "open"
        assert call["status"]["code"] == "ERROR"
        assert any(e["name"] == "circuit_breaker.rejected" for e in call["events"])
        assert not _of(spans, "order-service")  # never called
    finally:
        # Half-open after the cool-down (CIRCUIT_BREAKER_RESET_SECONDS, 10 s by default).
        deadline = time.monotonic() + 20
        while _breaker_gauge(httpx.get(metrics_url).text, "order-service") == 2:
            assert time.monotonic() < deadline, "breaker did not go half-open"
            time.sleep(0.5)

    assert _breaker_gauge(httpx.get(metrics_url).text, "order-service") == 1
    trial = _process(gateway, ok)
    assert trial.status_code == 200, trial.text
    assert _breaker_gauge(httpx.get(metrics_url).text, "order-service") == 0
    spans = console.trace(trace_id_of(trial), until=_complete_chain)
    call = span_named(spans, "order-service order_creation", "user-service")
    changes = [
        e["attributes"] for e in call["events"] if e["name"] == "circuit_breaker.state_change"
    ]
    assert {"circuit_breaker.from": "half_open", "circuit_breaker.to": "closed"} in changes


# --------------------------------------------------------------------------- bad input

CHAIN_BAD_INPUT = [
    ("POST", "/api/v1/process", {}),
    ("POST", "/api/v1/process", {"action": "x"}),
    ("POST", "/api/v1/process", {"user_id": 0, "action": "x"}),
    ("POST", "/api/v1/process", {"user_id": 2**31, "action": "x"}),
    ("POST", "/api/v1/process", {"user_id": "abc", "action": "x"}),
    ("POST", "/api/v1/process", {"user_id": 1001, "action": ""}),
    ("POST", "/api/v1/process", {"user_id": 1001, "action": "has space"}),
    ("POST", "/api/v1/process", {"user_id": 1001, "action": "x" * 65}),
    ("POST", "/api/v1/process", {"user_id": 1001, "action": "x", "unknown": 1}),
    ("POST", "/api/v1/process", {"user_id": 1001, "action": "x", "simulate_failure": "disk"}),
    ("POST", "/api/v1/process", {"user_email": "not-an-email", "action": "x"}),
    ("POST", "/api/v1/process", {"user_email": "a@example.com", "user_name": "\u0000",
                                 "action": "x"}),
    ("POST", "/api/v1/process", [1, 2]),
    ("GET", "/api/v1/orders/0", None),
    ("GET", "/api/v1/orders/abc", None),
    ("GET", "/api/v1/orders/99999999999", None),
    ("GET", "/api/v1/orders/2147483647", None),
    ("GET", "/api/v1/orders?limit=0", None),
    ("GET", "/api/v1/orders?limit=101", None),
    ("GET", "/api/v1/orders?offset=-1", None),
    ("GET", "/api/v1/orders?user_id=x", None),
    ("GET", "/api/v1/audit?limit=1000", None),
    ("GET", "/api/v1/audit?order_id=-5", None),
    ("GET", "/api/v1/audit?user_id=1.5", None),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), CHAIN_BAD_INPUT)
def test_bad_input_is_a_4xx_json_error(
    gateway: httpx.Client, method: str, path: str, body: Any
) -> None:
    response = gateway.request(method, path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("service", "body"),
    [
        ("order-service", {"user_id": 1001}),
        ("order-service", {"user_id": 1001, "action": "x", "user_tier": "platinum"}),
        ("order-service", {"user_id": 1001, "action": "x", "items": []}),
        ("order-service", {"user_id": 1001, "action": "x", "items": [{"sku": "NOPE"}]}),
        ("order-service", {"user_id": 1001, "action": "x",
                           "items": [{"sku": "SKU-MUG", "quantity": 0}]}),
        ("audit-service", {"user_id": 1001}),
        ("audit-service", {"user_id": 1001, "action": "x", "order_total": -1}),
        ("audit-service", {"user_id": 1001, "action": "x", "event_type": "bad type"}),
        ("audit-service", {"user_id": 1001, "action": "x", "simulate_failure": "order"}),
    ],
)  # fmt: skip
def test_bad_input_on_the_inner_services(
    system: RunningSystem, service: str, body: dict[str, Any]
) -> None:
    response = httpx.post(system.url(service) + "/process", json=body)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_order_service_prices_given_items_directly(system: RunningSystem) -> None:
    body = {"user_id": 1009, "action": "direct", "user_tier": "gold",
            "items": [{"sku": "SKU-BOOK", "quantity": 2}, {"sku": "SKU-MUG"}]}  # fmt: skip
    response = httpx.post(system.url("order-service") + "/process", json=body, timeout=15)
    assert response.status_code == 200, response.text
    order = response.json()["order"]
    assert [(i["sku"], i["quantity"]) for i in order["items"]] == [("SKU-BOOK", 2), ("SKU-MUG", 1)]
    assert order["subtotal"] == pytest.approx(92.48)
    assert order["discount"] == pytest.approx(13.87)  # gold: 15 %
    assert order["tax"] == pytest.approx(6.29)  # 8 % of 78.61
    assert order["total"] == pytest.approx(84.90)
