"""What every HTTP service shares: telemetry, health, readiness, metrics and JSON errors.

A service's ``create_app(settings)`` builds its app with :func:`create_service` and adds its
own routers, so each service file holds only what that service owns. Nothing happens at
import: telemetry is set up when ``create_app`` runs (``uvicorn --factory``), unless the
caller passes its own providers (tests do). What a service's lifespan opens (engine, cache,
clients) is lifespan state, reached through the typed dependencies of ``services.deps``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_lab import __version__, registry
from otel_lab.db import create_engine, session_factory, warm_up
from otel_lab.gc_tuning import settle_garbage_collector
from otel_lab.request_body import LimitedBody, declared_over
from otel_lab.services import deadline
from otel_lab.services.chaos import ChaosMiddleware
from otel_lab.services.downstream import (
    Downstream,
    create_client,
    install_baggage_span_attributes,
)
from otel_lab.services.errors import (
    DependencyUnavailableError,
    InvalidInputError,
    PayloadTooLargeError,
    ServiceError,
    document_errors,
    error_json,
    handle_http_exception,
    handle_service_error,
)
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import TelemetryMiddleware, setup_telemetry, shutdown_telemetry
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.context import request_id_var
from otel_lab.telemetry.setup import Telemetry

logger = logging.getLogger(__name__)

# A lifespan opens what the service needs for its lifetime (its clients traced to the
# telemetry given) and yields it as lifespan state (a mapping of names to collaborators);
# ``/ready`` hands that state to the checks.
Lifespan = Callable[[Settings, Telemetry], AbstractAsyncContextManager[Mapping[str, object]]]
ReadinessCheck = Callable[[State], Awaitable[object]]

_READINESS_TIMEOUT_SECONDS = 2.0
NATIVE_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


_ECHO_DEPTH, _ECHO_ITEMS, _ECHO_CHARS = 8, 20, 200


def _json_safe(value: object, depth: int = 0) -> object:
    """Input echoed back in an error, made safe to encode and short: NaN and infinity as
    text, lone surrogates escaped (UTF-8 cannot carry them), long strings, big and deep
    containers cut (a 1 MB or 900-deep body must not come back, nor exhaust the stack)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "..."
    if isinstance(value, dict | list | tuple) and depth >= _ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:_ECHO_ITEMS]
        return {_json_safe(str(k)): _json_safe(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value[:_ECHO_ITEMS]]
    if isinstance(value, int) and abs(value) > 10**_ECHO_CHARS:
        return "a very large number"
    return value


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape (``detail``: the field errors), safe for any input echoed back."""
    assert isinstance(exc, RequestValidationError)
    errors = [{**error, "input": _json_safe(error.get("input"))} for error in exc.errors()]
    body = {"detail": _json_safe(jsonable_encoder(errors)), "request_id": request_id_var.get()}
    return JSONResponse(body, status_code=422)


async def _text_not_unicode(request: Request, exc: Exception) -> JSONResponse:
    """Text the database cannot store because it is not valid Unicode (a lone surrogate,
    which JSON's ``\\ud800`` escapes can carry): the client's error."""
    return error_json(InvalidInputError(f"text is not valid Unicode: {_json_safe(str(exc))}"))


MAX_BODY_BYTES = 1_048_576


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes``, declared or streamed.

    The rest of the body is read and dropped before the answer (up to 64 MiB), so a client
    that sends the whole body before reading gets the 413 rather than a connection reset.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = LimitedBody(receive, self.max_bytes)
        if declared_over(scope, self.max_bytes):
            await body.drain()
            await error_json(PayloadTooLargeError(self.max_bytes))(scope, receive, send)
            return
        # A body that grows past the limit: handle_http_exception answers in the shared shape.
        await self.app(scope, body.receive, send)


async def _value_rejected_by_database(request: Request, exc: Exception) -> JSONResponse:
    """Input that passed validation but that PostgreSQL cannot store (a NUL character in
    text, a number out of a column's range) is the client's error, not an outage."""
    message = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
    return error_json(InvalidInputError(f"value rejected by the database: {message}"))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 naming the database; 504 when the wait was cut by the request's deadline."""
    logger.warning("database_unavailable", extra={"error": str(exc).splitlines()[0][:200]})
    error: ServiceError
    if deadline.expired():
        deadline.exceeded("database")
        error = deadline.DeadlineExceededError("database")
    else:
        error = DependencyUnavailableError("database", "database unavailable, try again shortly")
    return error_json(error, cause=exc)


async def _cache_unavailable(request: Request, exc: Exception) -> JSONResponse:
    error = DependencyUnavailableError("cache", "cache unavailable, try again shortly")
    return error_json(error, cause=exc)


@asynccontextmanager
async def database(settings: Settings, telemetry: Telemetry) -> AsyncIterator[dict[str, object]]:
    """The service's engine and session factory, as lifespan state, for its lifetime.

    ``autocommit``: the pool's connections as they are (autocommit, no BEGIN/COMMIT), for
    work that is one statement: most requests. ``engine`` and the sessions: the same pool
    with transactions (PostgreSQL's default isolation, set per checkout).
    """
    autocommit = create_engine(settings, telemetry, autocommit=True)
    engine = autocommit.execution_options(isolation_level="READ COMMITTED")
    try:
        await warm_up(autocommit)  # before the app serves: ready means warm
        yield {"engine": engine, "autocommit": autocommit, "sessions": session_factory(engine)}
    finally:
        await autocommit.dispose()


async def database_ready(state: State) -> None:
    """Readiness check for services that use :func:`database`."""
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    service: str
    checks: dict[str, str]  # each dependency: "ok" or "unavailable: <error>"


def create_service(
    service_name: str,
    settings: Settings,
    *,
    title: str,
    description: str = "",
    lifespan: Lifespan | None = None,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """A FastAPI app with the shared telemetry, `/health`, `/ready`, `/metrics` and errors.

    ``telemetry``: the providers to report to. None means the app is the process's entry
    point (``uvicorn --factory``): it sets up the process's telemetry from the ``OTEL_*``
    environment (the global providers, the root log handlers), settles the garbage
    collector once up, and shuts telemetry down with the app. An app given its providers
    (a test's) changes nothing process-wide.
    """
    owns_telemetry = telemetry is None
    if telemetry is None:
        telemetry = setup_telemetry(service_name, **settings.telemetry_defaults())
    checks = dict(readiness_checks or {})

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        opening = lifespan(settings, telemetry) if lifespan is not None else nullcontext({})
        try:
            async with opening as opened:
                if owns_telemetry:
                    settle_garbage_collector()
                yield {
                    "settings": settings,
                    "service_name": service_name,
                    "telemetry": telemetry,
                    **opened,
                }
        finally:
            if owns_telemetry:
                shutdown_telemetry()

    # FastAPIOffline serves Swagger UI and ReDoc from the wheel, not a CDN: /docs works offline.
    app = FastAPIOffline(
        title=title,
        description=description,
        version=__version__,
        lifespan=run,
        # FastAPI's native telemetry would add a second server span and three operation
        # spans per request; TelemetryMiddleware already covers the request, more cheaply.
        telemetry=NATIVE_TELEMETRY_OFF,
    )
    app.add_middleware(ChaosMiddleware, settings=settings)  # inside the server span
    # Outside chaos (an injected delay spends the budget too), inside the server span.
    app.add_middleware(
        deadline.DeadlineMiddleware, budget_seconds=settings.request_deadline_seconds
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    # Outside the body limit: the 413 is traced too. With OTEL_SDK_DISABLED=true it runs
    # on the no-op API: the request ID, the request log line and the Prometheus series are
    # the service's own features, not the OpenTelemetry SDK's, and stay.
    app.add_middleware(
        TelemetryMiddleware,
        service_name=service_name,
        tracer_provider=telemetry.spans_to(),
        meter_provider=telemetry.metrics_to(),
    )
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    for exc_type in (OperationalError, InterfaceError, PoolTimeoutError, ConnectionRefusedError):
        app.add_exception_handler(exc_type, _database_unavailable)
    app.add_exception_handler(DataError, _value_rejected_by_database)
    app.add_exception_handler(UnicodeEncodeError, _text_not_unicode)
    app.add_exception_handler(RedisError, _cache_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    document_errors(app, dependencies=lifespan is not None)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Dependencies are `/ready`'s business."""
        return {"status": "ok", "service": service_name}

    @app.get("/ready", tags=["operations"], responses={503: {"model": Readiness}})
    async def ready(request: Request, response: Response) -> Readiness:
        """Readiness: every dependency answers within a short timeout (503 when one does
        not; a report, not an error)."""
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(request.state), _READINESS_TIMEOUT_SECONDS)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in results.values())
        response.status_code = 200 if ok else 503
        return Readiness(
            status="ready" if ok else "not ready", service=service_name, checks=results
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        """Prometheus pull, OpenMetrics with exemplars (sync: collectors may block briefly)."""
        return Response(prom.render_metrics(), media_type=prom.METRICS_CONTENT_TYPE)

    return app


def include_routes(app: FastAPI, *routers: APIRouter) -> None:
    """``app.include_router(router)`` for each router, with its routes registered on the
    app's own router, as ``include_router`` did in earlier FastAPI releases.

    FastAPI 0.165 keeps an included router as a nested router that is matched again when
    it handles the request: about 30 us of CPU per request on a route of the fourth of
    four routers (docs/performance.md). Each route is registered afresh on the app, so it
    takes the app's ``dependency_overrides``; the router's prefix, tags, dependencies and
    responses are already part of its routes. ``tests/inprocess/test_routes.py`` checks
    the routes and ``/openapi.json`` against ``include_router``'s. A router with its own
    lifespan or start-up and shutdown handlers is refused: ``include_router`` would have
    merged them into the app's, and dropping them silently would change what runs.
    """
    default_lifespan = type(APIRouter().lifespan_context)
    for router in routers:
        if (
            router.on_startup
            or router.on_shutdown
            or (type(router.lifespan_context) is not default_lifespan)
        ):
            raise TypeError(f"{router!r} has a lifespan of its own: use app.include_router")
        for route in router.routes:
            if not isinstance(route, APIRoute):
                raise TypeError(f"{route!r}: only FastAPI path operations are flattened")
            app.router.add_api_route(
                route.path,
                route.endpoint,
                response_model=route.response_model,
                status_code=route.status_code,
                tags=route.tags,
                dependencies=route.dependencies,
                summary=route.summary,
                description=route.description,
                response_description=route.response_description,
                responses=route.responses,
                deprecated=route.deprecated,
                methods=route.methods,
                operation_id=route.operation_id,
                response_model_include=route.response_model_include,
                response_model_exclude=route.response_model_exclude,
                response_model_by_alias=route.response_model_by_alias,
                response_model_exclude_unset=route.response_model_exclude_unset,
                response_model_exclude_defaults=route.response_model_exclude_defaults,
                response_model_exclude_none=route.response_model_exclude_none,
                include_in_schema=route.include_in_schema,
                response_class=route.response_class,
                name=route.name,
                callbacks=route.callbacks,
                openapi_extra=route.openapi_extra,
                generate_unique_id_function=route.generate_unique_id_function,
                strict_content_type=route.strict_content_type,
                max_body_size=route.max_body_size,
                form_limits=route.form_limits,
            )


def create_chain_service(
    service: registry.Service,
    settings: Settings | None,
    telemetry: Telemetry | None,
    *,
    description: str,
    routers: Sequence[APIRouter],
    next_hop: tuple[str, registry.Service] | None = None,
) -> FastAPI:
    """A service of the user -> order -> audit chain: :func:`create_service` with PostgreSQL
    (checked by ``/ready``), the chain's baggage copied onto its spans, and ``next_hop``
    (lifespan state name, service) as a :class:`Downstream` sharing one traced client."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(
        settings: Settings, telemetry: Telemetry
    ) -> AsyncIterator[dict[str, object]]:
        install_baggage_span_attributes(settings, telemetry)
        async with AsyncExitStack() as stack:
            state = await stack.enter_async_context(database(settings, telemetry))
            if next_hop is not None:
                name, hop = next_hop
                client = await stack.enter_async_context(create_client(settings, telemetry))
                url = settings.base_url(hop)
                state[name] = Downstream(
                    hop.name, url, client, settings=settings, telemetry=telemetry
                )
            yield state

    app = create_service(
        service.name,
        settings,
        title=f"Otel Lab {service.name}",
        description=description,
        lifespan=lifespan,
        readiness_checks={"database": database_ready},
        telemetry=telemetry,
    )
    include_routes(app, *routers)
    return app
