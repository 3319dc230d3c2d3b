"""HTTP server telemetry as one pure ASGI middleware.

One server span per request (no per-chunk send/receive spans) with the stable HTTP
semantic conventions, the route template as ``http.route`` and as the ``path`` label, the
request ID on the span, the access log line and the response, a W3C ``traceresponse``
header, Prometheus metrics with trace exemplars and the OTel ``http.server.request.duration``
histogram.

It is hand-written rather than ``opentelemetry-instrumentation-asgi`` because the stock
middleware costs several times an endpoint's own CPU; this one reads only the headers it
needs, writes the span's attributes in two calls and its access line without the logging
machinery (docs/instrumentation.md has the measurements).
"""

from __future__ import annotations

import json
import logging
import os
import time
from urllib.parse import parse_qsl, urlencode

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import PARAMS_TO_REDACT, get_excluded_urls
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.context import request_id_var, sanitize_request_id
from otel_lab.telemetry.duration import SERVER_DURATION, duration_histogram
from otel_lab.telemetry.logs import AccessLog

logger = logging.getLogger("otel_lab.request")

# The Prometheus ``path`` label of a request that matched no route (raw paths would make
# the label unbounded). The span leaves ``http.route`` unset instead, as semconv says.
UNMATCHED_ROUTE = "unmatched"
_UNTRACED_PATHS = frozenset({"/metrics"})  # scrapes every few seconds would bury real traffic
_DEFAULT_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)


def known_methods() -> frozenset[str]:
    """``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` (comma-separated) replaces the default
    set, as the HTTP semantic conventions say; other methods are reported as ``_OTHER``."""
    configured = os.environ.get("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "")
    methods = frozenset(m.strip() for m in configured.split(",") if m.strip())
    return methods or _DEFAULT_KNOWN_METHODS


# The query parameters semconv says to redact in ``url.query`` (the contrib instrumentations'
# own list).
_SENSITIVE_QUERY_KEYS = frozenset(PARAMS_TO_REDACT)
# The request headers the middleware reads besides the propagators' own; the rest are
# never decoded.
_OWN_HEADERS = frozenset((b"x-request-id", b"user-agent", b"host"))


class _HeaderGetter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_getter = _HeaderGetter()


def _internal_error_start() -> Message:
    return {
        "type": "http.response.start",
        "status": 500,
        "headers": [(b"content-type", b"application/json")],
    }


def _internal_error_body(request_id: str) -> bytes:
    return json.dumps({"detail": "Internal Server Error", "request_id": request_id}).encode()


def _redacted_query(query: bytes) -> str:
    text = query.decode("latin-1")
    if not any(key in text for key in _SENSITIVE_QUERY_KEYS):
        return text
    pairs = parse_qsl(text, keep_blank_values=True)
    return urlencode([(k, "REDACTED" if k in _SENSITIVE_QUERY_KEYS else v) for k, v in pairs])


def _server_address(host: str | None, scope: Scope) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` from the Host header, else the socket."""
    if not host:
        server = scope.get("server") or ("", None)
        return str(server[0]), server[1]
    if host.startswith("["):  # an IPv6 literal, [::1]:8080
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else None


def _mark_failed(span: trace.Span) -> str | None:
    """Mark a 5xx request span failed, unless the application's error handler already did
    (its status description is kept), and return the ``error.type`` that handler set, if
    any: more specific than the status code (``upstream_timeout`` rather than ``504``)."""
    status = getattr(span, "status", None)
    if status is None or status.status_code is not StatusCode.ERROR:
        span.set_status(Status(StatusCode.ERROR))
    marked = (getattr(span, "attributes", None) or {}).get(ERROR_TYPE)
    return str(marked) if marked else None


def _service_name(provider: trace.TracerProvider) -> str:
    resource = getattr(provider, "resource", None)
    name = resource.attributes.get("service.name") if resource is not None else None
    return str(name) if name else "unknown_service"


class TelemetryMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        service_name: str | None = None,
    ) -> None:
        self.app = app
        self.tracer = trace.get_tracer("otel_lab.http", tracer_provider=tracer_provider)
        # In plain numbers where this package's MeterProvider exports them
        # (telemetry/duration.py: the SDK's record path cost 18 us a request).
        self.duration = duration_histogram(meter_provider, "otel_lab.http", SERVER_DURATION)
        self._children: dict[tuple[str, str, int], tuple[list[int], prom.Latency]] = {}
        self.known_methods = known_methods()
        self._propagator_headers = frozenset(propagate.get_global_textmap().fields)
        self._wanted_headers = _OWN_HEADERS | {h.encode() for h in self._propagator_headers}
        self.excluded_urls = get_excluded_urls("FASTAPI")  # or OTEL_PYTHON_EXCLUDED_URLS
        self.access_log = AccessLog(
            service_name or _service_name(tracer_provider or trace.get_tracer_provider())
        )
        self.in_flight = 0  # requests being served: ``concurrent_requests``
        prom.count_in_flight(self)

    def _series(self, method: str, path: str, status_code: int) -> tuple[list[int], prom.Latency]:
        """The Prometheus series of one (method, route, status), looked up by one key."""
        key = (method, path, status_code)
        series = self._children.get(key)
        if series is None:
            if len(self._children) > 4096:
                self._children.clear()
            series = self._children[key] = prom.REQUEST_SERIES.series(
                method, path, str(status_code)
            )
        return series

    def _is_excluded(self, scope: Scope) -> bool:
        path = scope["path"]
        return path in _UNTRACED_PATHS or self.excluded_urls.url_disabled(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_excluded(scope):
            await self.app(scope, receive, send)
            return

        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self._wanted_headers
        }
        request_id = sanitize_request_id(headers.get("x-request-id"))
        method = scope["method"]
        known_method = method if method in self.known_methods else "_OTHER"
        start = time.perf_counter()
        # Trace context and baggage, by whatever propagators OTEL_PROPAGATORS names; with
        # none of their headers present there is nothing to extract.
        parent = (
            propagate.extract(headers, getter=_getter)
            if not self._propagator_headers.isdisjoint(headers)
            else None
        )
        address, port = _server_address(headers.get("host"), scope)
        attributes = {
            HTTP_REQUEST_METHOD: known_method,
            URL_PATH: scope["path"],
            URL_SCHEME: scope.get("scheme", "http"),
            NETWORK_PROTOCOL_VERSION: scope.get("http_version", "1.1"),
            USER_AGENT_ORIGINAL: headers.get("user-agent", ""),
            CLIENT_ADDRESS: (scope.get("client") or ("",))[0],
            SERVER_ADDRESS: address,
            "request.id": request_id,
        }
        if port is not None:
            attributes[SERVER_PORT] = port
        if scope.get("query_string"):
            attributes[URL_QUERY] = _redacted_query(scope["query_string"])
        if known_method == "_OTHER":
            attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
        span_method = method if known_method != "_OTHER" else "HTTP"
        span = self.tracer.start_span(
            span_method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        span_context = span.get_span_context()
        context_token = context.attach(trace.set_span_in_context(span, parent))
        request_id_token = request_id_var.set(request_id)
        extra_headers = [(b"x-request-id", request_id.encode())]
        # The ids in hex once, for the traceresponse header, the exemplar and the access line.
        trace_hex = span_hex = exemplar_trace_id = None
        if span_context.is_valid:
            trace_hex = f"{span_context.trace_id:032x}"
            span_hex = f"{span_context.span_id:016x}"
            flags = span_context.trace_flags
            traceresponse = f"00-{trace_hex}-{span_hex}-{flags:02x}"
            extra_headers.append((b"traceresponse", traceresponse.encode()))
            if flags.sampled:  # exemplars point only at traces that were kept
                exemplar_trace_id = trace_hex
        status_code = 500
        response_started = False
        error_type: str | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                status_code = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            error_type = type(exc).__qualname__
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            prom.ERRORS.labels(type(exc).__name__).inc()
            logger.exception("unhandled_exception", extra={"error_type": type(exc).__name__})
            if response_started:
                raise
            # Answer here rather than in Starlette's error middleware, which sits outside
            # this one: the client still gets JSON, its request ID and its traceresponse.
            await send_with_headers(_internal_error_start())
            await send({"type": "http.response.body", "body": _internal_error_body(request_id)})
        finally:
            self.in_flight -= 1
            elapsed = time.perf_counter() - start
            route_obj = scope.get("route")
            route: str | None = getattr(route_obj, "path", None)
            if status_code >= 500:
                marked = _mark_failed(span)
                error_type = error_type or marked or str(status_code)
            final: dict[str, str | int] = {HTTP_RESPONSE_STATUS_CODE: status_code}
            if route is not None:
                span.update_name(f"{span_method} {route}")
                final[HTTP_ROUTE] = route
            if error_type is not None:
                final[ERROR_TYPE] = error_type
            span.set_attributes(final)
            span.end()

            path_label = route or UNMATCHED_ROUTE
            count, latency = self._series(known_method, path_label, status_code)
            count[0] += 1
            latency.observe(elapsed, exemplar_trace_id)
            self.duration.record(
                elapsed, (known_method, status_code, route, error_type), span_context
            )
            self.access_log.write(
                method=method,
                path=path_label,
                status_code=status_code,
                elapsed_ms=round(elapsed * 1000, 2),
                request_id=request_id,
                trace_id=trace_hex,
                span_id=span_hex,
            )
            request_id_var.reset(request_id_token)
            context.detach(context_token)
