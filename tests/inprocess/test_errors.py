"""The error model and the shared app in-process: one JSON shape, the span marked and the
error counted once, for errors raised by routes and for the failures the factory translates."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.trace import StatusCode
from starlette.types import Message

from otel_lab import request_body
from otel_lab.services.base import create_service
from otel_lab.services.errors import (
    ConflictError,
    DependencyUnavailableError,
    NotFoundError,
    ServiceError,
    UpstreamError,
    with_retry_after,
)
from tests.inprocess.conftest import Recorded, errors_total, run, served, settings_for

router = APIRouter()


class _Broken(ServiceError):
    error_type = "probe_broken"


@router.get("/missing")
async def missing() -> None:
    raise NotFoundError("thing 7 not found", kind="thing")


@router.get("/taken")
async def taken() -> None:
    raise ConflictError("name taken")


@router.get("/broken")
async def broken() -> None:
    raise _Broken("it broke", step="probe")


@router.get("/down")
async def down() -> None:
    raise DependencyUnavailableError("order-service", "order-service down", headers=None)


@router.post("/echo")
async def echo(body: dict[str, int]) -> dict[str, int]:
    return body


def _app(recorded: Recorded, **settings: object) -> FastAPI:
    app = create_service(
        "probe", settings_for(**settings), title="probe", telemetry=recorded.telemetry
    )
    app.include_router(router)
    return app


def _get(recorded: Recorded, path: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        async with served(_app(recorded)) as client:
            return await client.request("GET", path, **kwargs)  # type: ignore[arg-type]

    return run(go())


def test_a_client_error_is_json_with_the_request_id_and_leaves_the_span_alone(
    recorded: Recorded,
) -> None:
    response = _get(recorded, "/missing", headers={"x-request-id": "rid-404"})
    assert response.status_code == 404
    assert response.json() == {
        "detail": "thing 7 not found",
        "error_type": "not_found",
        "request_id": "rid-404",
        "kind": "thing",
    }
    server = recorded.server_span()
    assert server.status.status_code is not StatusCode.ERROR
    assert not [e for e in server.events if e.name == "exception"]


def test_a_conflict_is_a_409(recorded: Recorded) -> None:
    response = _get(recorded, "/taken")
    assert response.status_code == 409
    assert response.json()["error_type"] == "conflict"
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_a_server_error_marks_the_span_once_and_is_counted_once(recorded: Recorded) -> None:
    before = errors_total("probe_broken")
    response = _get(recorded, "/broken")
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "it broke" and body["step"] == "probe"
    assert body["request_id"] == response.headers["x-request-id"]
    server = recorded.server_span()
    assert server.status.status_code is StatusCode.ERROR
    (event,) = [e for e in server.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"].endswith("_Broken")
    assert errors_total("probe_broken") == before + 1


def test_a_dependency_error_names_the_dependency(recorded: Recorded) -> None:
    before = errors_total("order_service_unavailable")
    response = _get(recorded, "/down")
    assert response.status_code == 503
    assert response.json()["error_type"] == "order_service_unavailable"
    assert errors_total("order_service_unavailable") == before + 1


def test_no_route_and_wrong_method_have_the_same_shape(recorded: Recorded) -> None:
    response = _get(recorded, "/nowhere")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "Not Found",
        "error_type": "not_found",
        "request_id": response.headers["x-request-id"],
    }
    wrong = _get(recorded, "/echo")
    assert wrong.status_code == 405 and wrong.json()["error_type"] == "method_not_allowed"


@router.put("/echo")
async def replace_echo() -> None: ...


def test_a_405_allows_every_method_the_path_has(recorded: Recorded) -> None:
    """FastAPI makes a route per method; Starlette's 405 named only the first route's
    (``Allow: POST`` here), which schemathesis' allow_header_conformance check caught."""
    response = _get(recorded, "/echo")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, PUT"


def test_validation_errors_keep_fastapis_shape_and_carry_the_request_id(
    recorded: Recorded,
) -> None:
    async def go() -> httpx.Response:
        async with served(_app(recorded)) as client:
            return await client.post("/echo", content=b'{"a": NaN, "b": "x"}')

    response = run(go())
    assert response.status_code == 422
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["detail"][0]["loc"] == ["body", "b"] or body["detail"][0]["loc"][0] == "body"


async def _stalled_body() -> AsyncIterator[bytes]:
    """Part of a body, then nothing (a client that stopped sending, the connection open)."""
    yield b'{"a": '
    await asyncio.sleep(3600)
    yield b"1}"


def test_a_body_that_stops_arriving_is_a_408_in_the_same_shape(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn has no body timeout: such a request used to wait for the client forever."""
    monkeypatch.setattr(request_body, "BODY_IDLE_SECONDS", 0.2)

    async def go() -> httpx.Response:
        async with served(_app(recorded)) as client:
            return await client.post(
                "/echo", content=_stalled_body(), headers={"content-type": "application/json"}
            )

    response = run(go())
    assert response.status_code == 408
    assert response.json() == {
        "detail": "the request body stopped arriving (nothing for 0.2 s)",
        "error_type": "request_timeout",
        "request_id": response.headers["x-request-id"],
    }


def test_read_body_gives_up_on_a_stalled_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's proxy and the console's OTLP receiver read bodies with read_body."""
    monkeypatch.setattr(request_body, "BODY_IDLE_SECONDS", 0.1)
    chunks = _stalled_body()

    async def receive() -> Message:
        return {"type": "http.request", "body": await anext(chunks), "more_body": True}

    with pytest.raises(request_body.BodyStalledError):
        run(request_body.read_body(receive, 1000))


def test_a_body_over_the_limit_is_a_413_in_the_same_shape(recorded: Recorded) -> None:
    async def go() -> tuple[httpx.Response, httpx.Response]:
        app = create_service(
            "probe", settings_for(), title="probe", telemetry=recorded.telemetry, max_body_bytes=10
        )
        app.include_router(router)
        async with served(app) as client:
            declared = await client.post("/echo", content=b"x" * 11)

            async def chunks():  # streamed: no Content-Length to refuse up front
                yield b'{"a": 1,'
                yield b' "b": 22222}'

            streamed = await client.post("/echo", content=chunks())
        return declared, streamed

    for response in run(go()):
        assert response.status_code == 413
        assert response.json() == {
            "detail": "request body larger than 10 bytes",
            "error_type": "payload_too_large",
            "request_id": response.headers["x-request-id"],
        }


def test_the_error_classes() -> None:
    assert UpstreamError("x").status_code == 502
    assert UpstreamError("x", error_type="upstream_invalid_response").error_type == (
        "upstream_invalid_response"
    )
    assert DependencyUnavailableError("cache", "down").error_type == "cache_unavailable"
    assert with_retry_after(0.2) == {"Retry-After": "1"}
    assert with_retry_after(4.1) == {"Retry-After": "5"}


def test_importing_a_service_installs_nothing_and_leaves_logging_alone() -> None:
    """Telemetry and logging are the entry point's business (``create_app``), not an import's."""
    probe = """
import json, logging
root = logging.getLogger()
before = (list(root.handlers), root.level)
import otel_lab.services.api.app, otel_lab.services.users.app, otel_lab.services.orders.app
import otel_lab.services.audit.app, otel_lab.services.gateway.app
import otel_lab.services.weather_upstream.app
from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
print(json.dumps({
    "tracer": type(trace.get_tracer_provider()).__name__,
    "meter": type(metrics.get_meter_provider()).__name__,
    "logger": type(get_logger_provider()).__name__,
    "logging_untouched": (list(root.handlers), root.level) == before,
}))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {
        "tracer": "ProxyTracerProvider",
        "meter": "_ProxyMeterProvider",
        "logger": "ProxyLoggerProvider",
        "logging_untouched": True,
    }
