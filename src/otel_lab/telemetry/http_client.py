"""HTTP client telemetry for ``otel_lab.http_client``: a CLIENT span per request, the W3C
context in its headers, and the ``http.client.request.duration`` histogram.

It is one of the client's middlewares (``HTTPClient(middlewares=[...])``). The span and the
metric carry what ``opentelemetry-instrumentation-aiohttp-client`` records in the stable
HTTP conventions (the method or ``_OTHER``, ``url.full`` without credentials and with
sensitive query values redacted, ``server.address``, ``server.port``,
``http.response.status_code``, ``error.type``); ``tests/telemetry/test_http_client.py``
makes the same calls through both and compares. It adds about 50 us of CPU per call, its
span's export included; the contrib's trace config adds about 130 to an aiohttp call
(``scripts/bench_instrumentation.py``).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from opentelemetry import metrics, propagate, trace
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL
from opentelemetry.semconv.metrics.http_metrics import HTTP_CLIENT_REQUEST_DURATION
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import redact_url

from otel_lab.telemetry.duration import Instrument, Key, duration_histogram
from otel_lab.telemetry.metrics import LATENCY_BUCKETS
from otel_lab.telemetry.middleware import known_methods

if TYPE_CHECKING:  # the client's types only: the telemetry package imports nothing else
    from otel_lab.http_client import Handler, Middleware, Origin, Reply, Request

SCOPE = "otel_lab.http_client"


@functools.lru_cache(maxsize=512)
def _target(origin: Origin, target: str) -> tuple[str, dict[str, str | int]]:
    """``url.full`` and the server attributes of a request (a service calls a few URLs over
    and over, so each is worked out once)."""
    server: dict[str, str | int] = {SERVER_ADDRESS: origin.host, SERVER_PORT: origin.port}
    return redact_url(origin.url + target), server


def _duration_attributes(key: Key) -> dict[str, str | int]:
    address, port, method, status, error_type = key
    attributes: dict[str, str | int] = {}
    if address is not None:
        attributes[SERVER_ADDRESS] = address
    if port is not None:
        attributes[SERVER_PORT] = port
    attributes[HTTP_REQUEST_METHOD] = method
    if status is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status
    if error_type is not None:
        attributes[ERROR_TYPE] = error_type
    return attributes


# Keyed by (server address, server port, method or _OTHER, status code, error type), each
# None when absent; in plain numbers where the package's MeterProvider exports them.
CLIENT_DURATION = Instrument(
    HTTP_CLIENT_REQUEST_DURATION,
    "Duration of HTTP client requests.",
    LATENCY_BUCKETS,
    _duration_attributes,
)


def client_middleware(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Middleware:
    """The middleware to pass to ``HTTPClient(middlewares=[...])``."""
    tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
    duration = duration_histogram(meter_provider, SCOPE, CLIENT_DURATION)
    methods = known_methods()

    async def traced(request: Request, handler: Handler) -> Reply:
        started = time.perf_counter()
        url_full, server = _target(request.origin, request.target)
        method = request.method
        status: int | None = None
        error_type: str | None = None
        if method in methods:
            name = measured_method = method
            attributes = {HTTP_REQUEST_METHOD: method, URL_FULL: url_full, **server}
        else:
            name, measured_method = "HTTP", "_OTHER"
            attributes = {
                HTTP_REQUEST_METHOD: "_OTHER",
                HTTP_REQUEST_METHOD_ORIGINAL: method,
                URL_FULL: url_full,
                **server,
            }
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        propagate.inject(request.headers, context=trace.set_span_in_context(span))
        try:
            response = await handler(request)
        except BaseException as error:  # the client's errors, or the caller's cancellation
            error_type = type(error).__qualname__
            span.set_attribute(ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.record_exception(error)
            raise
        else:
            status = response.status_code
            if status >= 400:
                error_type = str(status)
                span.set_attributes({HTTP_RESPONSE_STATUS_CODE: status, ERROR_TYPE: error_type})
                span.set_status(Status(StatusCode.ERROR))
            else:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            return response
        finally:
            span.end()
            duration.record(
                max(time.perf_counter() - started, 0.0),
                (request.origin.host, request.origin.port, measured_method, status, error_type),
                # The exemplar's span: the current one (the caller's), as the SDK takes it.
                trace.get_current_span().get_span_context(),
            )

    return traced
