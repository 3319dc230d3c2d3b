"""The gateway: ``uvicorn --factory otel_lab.services.gateway.app:create_app`` (port
``GATEWAY_PORT``, 8080).

The single front door (the service chain's nginx, in Python): every public path, and the same path
under ``/api/v1/``, goes to the service that owns it (:data:`ROUTES`, the one routing
table). The trace starts here (or continues a caller's ``traceparent``), the request ID is
set or validated here and sent on, and the answer comes back with its status, body and
headers. Its own ``/health``, ``/ready`` (which checks every upstream) and ``/metrics`` stay
local; another method on them is a 405 with ``Allow``, and on a service's path the
service's own 405 comes back.

Failures: an upstream that cannot be reached answers 502, one that does not answer in time
504, and one whose breaker is open 503 with ``Retry-After``; each JSON body names the
service. In time means within the request's budget (``REQUEST_DEADLINE_SECONDS``, 1.8 s;
a client's ``X-Request-Timeout-Ms`` may shorten it), which the gateway starts and every
hop behind it shares (``services.deadline``): an upstream stuck on a hung dependency
answers a 503/504 naming it before the gateway gives up on it.

Baggage from outside is dropped unless ``GATEWAY_TRUST_INBOUND_BAGGAGE=true``: baggage is
the chain's trusted user context, and a client must not be able to forge it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI, Request
from fastapi.responses import Response
from opentelemetry import baggage, context, trace
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_lab.http_client import Reply
from otel_lab.registry import GATEWAY, SERVICES
from otel_lab.request_body import BodyTooLargeError, declared_over, read_body
from otel_lab.services.base import create_service
from otel_lab.services.downstream import (
    IDEMPOTENT_METHODS,
    Downstream,
    DownstreamError,
    RetryPolicy,
    create_client,
    probe,
)
from otel_lab.services.errors import (
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    error_json,
    handle_http_exception,
)
from otel_lab.services.gateway.routes import API_PREFIX, PROXY_METHODS, ROUTES, owner_of
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import Telemetry
from otel_lab.telemetry.context import request_id_var

logger = logging.getLogger(__name__)

SERVICE_NAME = GATEWAY.name
# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "trailers", "transfer-encoding", "upgrade"}
)  # fmt: skip
_DROP_REQUEST = _HOP_BY_HOP | {
    # uvicorn answered a client's "Expect: 100-continue"; the body is sent on whole
    "host", "content-length", "accept-encoding", "expect",
    # trace context is injected by the instrumented client from the gateway's own span
    "traceparent", "tracestate", "baggage",
    "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
}  # fmt: skip
_DROP_RESPONSE = {
    name.encode() for name in _HOP_BY_HOP | {
        # The body is re-framed here (the client has de-chunked it, and decodes nothing, so
        # a Content-Encoding stays with its body); our middleware adds its own.
        "content-length", "traceresponse", "x-request-id", "server", "date",
    }
}  # fmt: skip


def upstream_urls(settings: Settings) -> dict[str, str]:
    """Each service the gateway routes to, and where it is reached."""
    return {s.name: settings.base_url(s) for s in SERVICES if s.paths}


def _forward_headers(scope: Scope) -> dict[str, str]:
    """The request's headers for the upstream: hop-by-hop ones, those listed in
    ``Connection`` and those the gateway sets itself dropped (of a repeated name the last
    is kept); ``X-Forwarded-*`` and the request ID added."""
    raw = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
    first: dict[str, str] = {}
    for name, value in raw:
        first.setdefault(name, value)
    connection_listed = {token.strip().lower() for token in first.get("connection", "").split(",")}
    headers = {
        name: value
        for name, value in raw
        if name not in _DROP_REQUEST and name not in connection_listed
    }
    client = scope.get("client")
    client_host = client[0] if client else ""
    prior = first.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{prior}, {client_host}" if prior else client_host
    headers["x-forwarded-proto"] = scope.get("scheme", "http")
    if host := first.get("host"):
        headers["x-forwarded-host"] = host
    if request_id := request_id_var.get():
        headers["x-request-id"] = request_id
    return headers


def _response_from(upstream: Reply) -> Response:
    response = Response(content=upstream.content, status_code=upstream.status_code)
    response.raw_headers.extend(
        (name, value) for name, value in upstream.raw_headers if name.lower() not in _DROP_RESPONSE
    )
    return response


async def proxy(scope: Scope, receive: Receive, *, service: str, strip: int) -> Response:
    """Send the request to ``service`` and hand its answer back (or raise a JSON error)."""
    state = scope["state"]
    settings: Settings = state["settings"]
    span = trace.get_current_span()
    span.set_attribute("gateway.upstream", service)
    limit = settings.gateway_max_body_bytes
    if declared_over(scope, limit):
        raise PayloadTooLargeError(limit)
    try:
        body = await read_body(receive, limit)
    except BodyTooLargeError:
        raise PayloadTooLargeError(limit) from None

    raw_path = scope.get("raw_path") or scope["path"].encode()
    path = raw_path.decode("latin-1")[strip:] or "/"
    if query := scope.get("query_string", b"").decode("latin-1"):
        path = f"{path}?{query}"
    method = scope["method"]
    idempotent = method in IDEMPOTENT_METHODS or any(
        name == b"idempotency-key" for name, _ in scope["headers"]
    )

    token = None if settings.gateway_trust_inbound_baggage else context.attach(baggage.clear())
    try:
        upstream = await state["upstreams"][service].request(
            method,
            path,
            step="proxy",
            idempotent=idempotent,
            content=body,
            headers=_forward_headers(scope),
        )
    except DownstreamError as exc:
        span.set_attribute("error.type", exc.error_type)
        logger.warning(
            "upstream_failed", extra={"upstream": service, "error": str(exc), "path": path}
        )
        raise
    finally:
        if token is not None:
            context.detach(token)
    return _response_from(upstream)


class ProxyRoute(Route):
    """A proxy route in the app's router (what ``/openapi.json`` and other methods see); the
    requests themselves are answered by :class:`ProxyDispatch`."""

    def __init__(self, path: str, *, service: str, strip: int) -> None:
        async def endpoint(request: Request) -> Response:
            return await _answer(request.scope, request.receive, service, strip)

        super().__init__(path, endpoint, methods=PROXY_METHODS, include_in_schema=False)
        self.service, self.strip = service, strip


async def _answer(scope: Scope, receive: Receive, service: str, strip: int) -> Response:
    try:
        return await proxy(scope, receive, service=service, strip=strip)
    except ServiceError as exc:
        return error_json(exc)


class ProxyFront:
    """The gateway's proxied requests below FastAPI (the app's middleware stack, in place of
    the one FastAPI would build): a path a service owns goes straight into the shared
    middleware (telemetry, body limit, deadline, chaos) and is answered by
    :class:`ProxyDispatch`, innermost of it, skipping FastAPI's own outer middleware (error
    page, native telemetry, body size: ``TelemetryMiddleware`` answers an unhandled error,
    the body limit is the shared one), its exception middleware, the router (some 60 routes
    tried in order) and the request/response wrapping. Everything else (``/health``,
    ``/ready``, ``/metrics``, the docs, unknown paths, other methods) takes the app's whole
    stack. The matched route is put in the scope as Starlette's router does, so the span
    keeps ``http.route``."""

    def __init__(self, app: FastAPI, routes: list[ProxyRoute]) -> None:
        # _route_for looks up the first segment: a service's prefix is one segment.
        assert all(prefix.count("/") == 1 for prefix in ROUTES), ROUTES
        self.routes = {route.path: route for route in routes}
        self.methods = frozenset(PROXY_METHODS)
        self.full = app.build_middleware_stack()
        outermost = cast(type, app.user_middleware[0].cls)  # TelemetryMiddleware
        shared = self.full
        while not isinstance(shared, outermost):
            shared = shared.app  # type: ignore[attr-defined]
        self.shared: ASGIApp = shared

    def _route_for(self, path: str) -> ProxyRoute | None:
        route = self.routes.get(path)
        if route is not None:
            return route
        # "/api/v1/items/7" -> "/api/v1/items", then "/items/7" -> "/items"
        start = len(API_PREFIX) if path.startswith(API_PREFIX + "/") else 0
        cut = path.find("/", start + 1)
        if cut < 0:
            return None
        parent = self.routes.get(path[:cut])
        return None if parent is None else self.routes.get(parent.path + "/{rest:path}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.methods:
            route = self._route_for(scope["path"])
            if route is not None:
                scope["route"] = route
                await self.shared(scope, receive, send)
                return
        await self.full(scope, receive, send)


class ProxyDispatch:
    """Innermost of the shared middleware: answers the requests :class:`ProxyFront` routed
    (their route is in the scope); the others go on to FastAPI's exception middleware and
    router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("route")
        if not isinstance(route, ProxyRoute):
            await self.app(scope, receive, send)
            return
        try:
            response = await _answer(scope, receive, route.service, route.strip)
        except StarletteHTTPException as exc:  # the body limit's 413 of a streamed body
            response = await handle_http_exception(Request(scope, receive), exc)
        await response(scope, receive, send)


async def no_route(request: Request, exc: Exception) -> Response:
    """The router's own errors: no service owns the path (404, with the prefixes that
    exist), or the gateway's own path does not take the method (``PUT /health``: 405 with
    ``Allow``, as the services answer it)."""
    if getattr(exc, "status_code", None) == 404:
        return error_json(
            NotFoundError(
                f"no service owns {request.url.path}", routes=sorted(ROUTES), api_prefix=API_PREFIX
            )
        )
    return await handle_http_exception(request, exc)


@asynccontextmanager
async def lifespan(settings: Settings, telemetry: Telemetry) -> AsyncIterator[dict[str, object]]:
    timeout = settings.gateway_upstream_timeout_seconds
    retry = RetryPolicy.from_settings(settings, statuses=frozenset())
    client = create_client(settings, telemetry)
    # Only unreachable upstreams count against the gateway's breakers and are retried; an
    # upstream's own 5xx answer is passed on as it is (see Downstream).
    upstreams = {
        name: Downstream(
            name,
            url,
            client,
            settings=settings,
            count_http_errors=False,
            retry=retry,
            timeout=timeout,
            telemetry=telemetry,
        )
        for name, url in upstream_urls(settings).items()
    }
    try:
        yield {"client": client, "upstreams": upstreams}
    finally:
        await client.close()


def _upstream_check(name: str) -> Callable[[State], Awaitable[None]]:
    async def check(state: State) -> None:
        upstream: Downstream = state.upstreams[name]
        response = await probe(state.client, f"{upstream.base_url}/health", timeout=1.0)
        if response.status_code >= 400:
            raise RuntimeError(f"{name} answered HTTP {response.status_code}")

    return check


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    settings = settings or get_settings()
    app = create_service(
        SERVICE_NAME,
        settings,
        title="Otel Lab gateway",
        description="The single front door: routes every public path (and /api/v1/...) "
        "to the service that owns it.",
        lifespan=lifespan,
        readiness_checks={name: _upstream_check(name) for name in upstream_urls(settings)},
        max_body_bytes=settings.gateway_max_body_bytes,
        telemetry=telemetry,
    )
    routes = [
        ProxyRoute(path, service=service, strip=len(base))
        for prefix, service in ROUTES.items()
        for base in ("", API_PREFIX)
        for path in (base + prefix, f"{base}{prefix}/{{rest:path}}")
    ]
    for route in app.router.routes:  # the app's own paths must not be a service's
        assert owner_of(getattr(route, "path", "")) is None, route
    app.router.routes.extend(routes)
    # No catch-all route: the router's 404 and 405 (a path it knows, another method) both
    # reach no_route.
    app.add_exception_handler(StarletteHTTPException, no_route)
    # Innermost of the middleware (appended, where add_middleware would put it outermost).
    app.user_middleware.append(Middleware(ProxyDispatch))
    app.middleware_stack = ProxyFront(app, routes)
    return app
