"""Every service's manual spans go to the telemetry its app was given, not to a global
provider: each app here reports to in-memory exporters, and its own spans (service,
repository, chain steps, showcase, weather) must be there, under the request's span."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_lab.queue import DEFAULT_QUEUE
from otel_lab.services.api.app import create_app as create_api
from otel_lab.services.audit.app import create_app as create_audit
from otel_lab.services.orders.app import create_app as create_orders
from otel_lab.services.users.app import create_app as create_users
from otel_lab.services.weather_upstream.app import create_app as create_weather_upstream
from tests.inprocess.conftest import (
    Recorded,
    closed_url,
    recording,
    run,
    served,
    settings_for,
)

pytestmark = pytest.mark.timeout(120)


def _calls(app: FastAPI, *requests: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with served(app) as client:
            return [await client.request(m, path, **kwargs) for m, path, kwargs in requests]

    return run(go())


def _named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"one {name!r} span, not {len(found)}: {[s.name for s in spans]}"
    return found[0]


def _parent(spans: Sequence[ReadableSpan], span: ReadableSpan) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    (parent,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


def _scope(span: ReadableSpan) -> str:
    assert span.instrumentation_scope is not None
    return span.instrumentation_scope.name


def test_user_service_and_repository_spans(recorded: Recorded, database_url: str) -> None:
    app = create_users(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    (created,) = _calls(app, ("POST", "/users", {"json": {"name": "Ada", "email": email}}))
    assert created.status_code == 201

    spans = recorded.spans.get_finished_spans()
    service = _named(spans, "service.create_user")
    assert _scope(service) == "otel_lab.users.service"
    assert service.attributes is not None
    assert service.attributes["api.operation"] == "create_user"
    assert service.attributes["user.id"] == created.json()["id"]
    assert _parent(spans, service).kind is SpanKind.SERVER
    for name in ("repository.get_user_by_email", "repository.insert_user"):
        repository = _named(spans, name)
        assert _scope(repository) == "otel_lab.users.repository"
        assert _parent(spans, repository) is service
    inserted = _named(spans, "repository.insert_user")
    assert inserted.attributes is not None
    assert inserted.attributes["user.id"] == created.json()["id"]


def test_chain_steps_and_the_downstream_call(recorded: Recorded, database_url: str) -> None:
    settings = settings_for(
        DATABASE_URL=database_url, ORDER_SERVICE_URL=closed_url(), DOWNSTREAM_RETRY_ATTEMPTS=1
    )
    app = create_users(settings, recorded.telemetry)
    (response,) = _calls(app, ("POST", "/process", {"json": {"user_id": 1001, "action": "t"}}))
    assert response.status_code == 502

    spans = recorded.spans.get_finished_spans()
    server = recorded.server_span()
    validation = _named(spans, "user_validation")
    enrichment = _named(spans, "profile_enrichment")
    for step in (validation, enrichment):
        assert _scope(step) == "otel_lab.users.chain"
        assert _parent(spans, step) is server
    assert validation.attributes is not None and validation.attributes["user.validated"] is True
    assert _parent(spans, _named(spans, "repository.get_user")) is validation
    assert _parent(spans, _named(spans, "repository.count_todos")) is enrichment
    call = _named(spans, "order-service order_creation")
    assert _scope(call) == "otel_lab.downstream"
    assert _parent(spans, call) is server
    assert call.status.status_code is StatusCode.ERROR


def test_order_creation_and_pricing_spans(recorded: Recorded, database_url: str) -> None:
    settings = settings_for(
        DATABASE_URL=database_url, AUDIT_SERVICE_URL=closed_url(), DOWNSTREAM_RETRY_ATTEMPTS=1
    )
    app = create_orders(settings, recorded.telemetry)
    body = {"user_id": 1001, "action": "buy", "items": [{"sku": "SKU-MUG", "quantity": 2}]}
    (response,) = _calls(app, ("POST", "/process", {"json": body}))
    assert response.status_code == 200, response.text

    spans = recorded.spans.get_finished_spans()
    creation = _named(spans, "order_creation")
    assert _scope(creation) == "otel_lab.orders"
    assert creation.attributes is not None
    assert creation.attributes["order.id"] == response.json()["order"]["id"]
    pricing = _named(spans, "pricing")
    assert _scope(pricing) == "otel_lab.orders.pricing"
    assert _parent(spans, pricing) is creation
    item = _named(spans, "price_item")
    assert _parent(spans, item) is pricing
    assert item.attributes is not None and item.attributes["order.item.line_total"] == 25.0
    audit_call = _named(spans, "audit-service audit_logging")
    assert _scope(audit_call) == "otel_lab.downstream"
    assert audit_call.status.status_code is StatusCode.ERROR


def test_audit_write_span(recorded: Recorded, database_url: str) -> None:
    app = create_audit(settings_for(DATABASE_URL=database_url), recorded.telemetry)
    body = {"user_id": 7, "order_id": 9, "action": "buy", "order_total": 5.0, "item_count": 1}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    (response,) = _calls(app, ("POST", "/process", {"json": body, "headers": headers}))
    assert response.status_code == 200

    spans = recorded.spans.get_finished_spans()
    write = _named(spans, "audit_log_write")
    assert _scope(write) == "otel_lab.audit"
    assert _parent(spans, write) is recorded.server_span()
    assert write.attributes is not None
    assert write.attributes["audit.id"] == response.json()["audit"]["id"]
    assert [event.name for event in write.events] == ["chain.completed"]


def test_showcase_and_analyze_spans(recorded: Recorded, database_url: str, redis_url: str) -> None:
    settings = settings_for(DATABASE_URL=database_url, REDIS_URL=redis_url)
    app = create_api(settings, recorded.telemetry)
    hello, complex_, database, analyze = _calls(
        app,
        ("GET", "/hello", {"params": {"name": "Ada"}}),
        ("GET", "/complex-operation", {"params": {"user_id": 5, "steps": 2}}),
        ("GET", "/db-operation", {"params": {"rows": 2}}),
        ("POST", "/analyze", {"json": {"a": 10.5, "b": 3.5}}),
    )
    assert [r.status_code for r in (hello, complex_, database, analyze)] == [200] * 4

    spans = recorded.spans.get_finished_spans()
    greeting = _named(spans, "hello")
    assert _scope(greeting) == "otel_lab.api.showcase"
    assert greeting.attributes is not None
    assert greeting.attributes["api.operation"] == "hello"
    assert greeting.attributes["service.name"] == "api"
    assert _parent(spans, greeting).kind is SpanKind.SERVER

    root = _named(spans, "complex_operation")
    assert root.attributes is not None and root.attributes["user.id"] == 5
    assert root.attributes["result.total"] == complex_.json()["result"]["total"]
    steps = [s for s in spans if s.name == "complex_operation.step"]
    assert len(steps) == 2
    processing = _named(spans, "complex_operation.processing")
    assert all(_parent(spans, step) is processing for step in steps)
    transforms = [s for s in spans if s.name == "complex_operation.step.transform"]
    assert sorted(_parent(spans, t).context.span_id for t in transforms) == sorted(
        s.context.span_id for s in steps
    )
    assert _parent(spans, processing) is root

    operation = _named(spans, "db_operation")
    ids = database.json()["item_ids"]
    assert operation.attributes is not None and list(operation.attributes["item.ids"]) == ids
    for step in ("insert", "select", "update", "delete"):
        assert _parent(spans, _named(spans, f"db_operation.{step}")) is operation

    worker = _named(spans, "WorkerService.analyze")
    assert _scope(worker) == "otel_lab.api.analyze"
    assert worker.attributes is not None and worker.attributes["analysis.sum"] == 14.0


def test_error_simulation_span_is_marked(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    app = create_api(
        settings_for(DATABASE_URL=database_url, REDIS_URL=redis_url), recorded.telemetry
    )
    (response,) = _calls(app, ("GET", "/error-simulation", {"params": {"probability": 1}}))
    assert response.status_code == 500

    span = _named(recorded.spans.get_finished_spans(), "error_simulation")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.simulated"] is True
    assert span.attributes["error.probability"] == 1.0
    assert [event.name for event in span.events] == ["exception"]


def test_weather_fetch_span_with_the_upstream_down(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    settings = settings_for(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        WEATHER_API_URL=closed_url(),
        WEATHER_MAX_RETRIES=1,
        WEATHER_BACKOFF_SECONDS=0,
    )
    (response,) = _calls(create_api(settings, recorded.telemetry), ("GET", "/weather/Oslo", {}))
    assert response.status_code == 502

    spans = recorded.spans.get_finished_spans()
    fetch = _named(spans, "weather.fetch")
    assert _scope(fetch) == "otel_lab.api.weather"
    assert fetch.status.status_code is StatusCode.ERROR
    assert fetch.attributes is not None and fetch.attributes["weather.attempts"] == 2
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [_parent(spans, a) for a in attempts] == [fetch, fetch]
    assert [e.attributes["retry.reason"] for e in fetch.events if e.name == "retry"] == [
        "ConnectError"
    ]


def test_weather_lookup_span(recorded: Recorded) -> None:
    app = create_weather_upstream(settings_for(), recorded.telemetry)
    (response,) = _calls(app, ("GET", "/v1/current", {"params": {"city": "Paris"}}))
    assert response.status_code == 200

    spans = recorded.spans.get_finished_spans()
    lookup = _named(spans, "weather.lookup")
    assert _scope(lookup) == "otel_lab.weather_upstream"
    assert _parent(spans, lookup) is recorded.server_span()
    assert lookup.attributes is not None
    assert lookup.attributes["weather.city"] == "Paris"
    assert lookup.attributes["weather.conditions"] == response.json()["conditions"]


def test_celery_and_redis_spans_go_to_the_apps_providers(
    recorded: Recorded, database_url: str, redis_url: str
) -> None:
    """The contrib instrumentations report to the providers the app was given: the publish
    (apply_async/item_enrichment, a PRODUCER under the request) and the cache's commands.
    Celery's instrumentation is one per process, so a second app with providers of its own
    takes it over: its publish is in its memory, not in the first app's."""
    broker_url = redis_url.rsplit("/", 1)[0] + "/3"  # a database of its own: no worker reads it
    settings = settings_for(DATABASE_URL=database_url, REDIS_URL=broker_url)
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    try:
        (created,) = _calls(
            create_api(settings, recorded.telemetry),
            ("POST", "/items", {"json": {"name": "Traced", "description": "to memory"}}),
        )
        assert created.status_code == 201, created.text
        spans = recorded.spans.get_finished_spans()
        publish = _named(spans, "apply_async/item_enrichment")
        assert publish.kind is SpanKind.PRODUCER
        assert _scope(publish) == "opentelemetry.instrumentation.celery"
        assert _parent(spans, publish) is recorded.server_span()
        # The message carries this span's context, for the worker to continue the trace.
        (message,) = [json.loads(raw) for raw in broker.lrange(DEFAULT_QUEUE, 0, -1)]
        _, trace_id, span_id, _ = message["headers"]["traceparent"].split("-")
        assert (trace_id, span_id) == (
            f"{publish.context.trace_id:032x}",
            f"{publish.context.span_id:016x}",
        )

        item_id = created.json()["id"]
        (read,) = _calls(create_api(settings, recorded.telemetry), ("GET", f"/items/{item_id}", {}))
        assert read.status_code == 200, read.text
        commands = [
            s
            for s in recorded.spans.get_finished_spans()
            if _scope(s) == "opentelemetry.instrumentation.redis"
        ]
        assert commands and all(s.kind is SpanKind.CLIENT for s in commands), commands

        other = recording()
        (again,) = _calls(
            create_api(settings, other.telemetry),
            ("POST", "/items", {"json": {"name": "Traced", "description": "elsewhere"}}),
        )
        assert again.status_code == 201, again.text
        _named(other.spans.get_finished_spans(), "apply_async/item_enrichment")
        _named(recorded.spans.get_finished_spans(), "apply_async/item_enrichment")  # still one
    finally:
        broker.flushdb()
