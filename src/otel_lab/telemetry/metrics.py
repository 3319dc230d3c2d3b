"""Prometheus metrics served on every service's ``/metrics`` (OpenMetrics, with exemplars).

The names are the ones the original services used (``requests_total``,
``request_latency_seconds``, ...) so their dashboards work unchanged; ``path`` is always a
route template, never a raw path.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from opentelemetry.trace import SpanContext
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import REGISTRY

# `_created` series double the exposition size and no dashboard here uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "requests", "Total number of HTTP requests processed.", ["method", "path", "status"]
)
REQUEST_LATENCY = Histogram(
    "request_latency_seconds",
    "Request latency in seconds.",
    ["method", "path"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("errors", "Application errors by type.", ["error_type"])
CONCURRENT_REQUESTS = Gauge("concurrent_requests", "HTTP requests being served right now.")


class _InFlight(Protocol):
    in_flight: int


# What serves requests in this process (the telemetry middlewares). Each counts its requests
# in a plain int, changed only by the event loop that serves it, and ``concurrent_requests``
# adds them up when it is scraped: a Gauge's inc() and dec() take its lock twice a request.
_serving: weakref.WeakSet[_InFlight] = weakref.WeakSet()
CONCURRENT_REQUESTS.set_function(lambda: sum(server.in_flight for server in list(_serving)))


def count_in_flight(server: _InFlight) -> None:
    """Add ``server.in_flight`` to ``concurrent_requests``."""
    _serving.add(server)


DB_OPERATION = Histogram(
    "db_operation_seconds", "Database operation time.", ["operation"], buckets=LATENCY_BUCKETS
)
API_OPERATION = Histogram(
    "api_operation_seconds", "Outbound API call time.", ["operation"], buckets=LATENCY_BUCKETS
)
CACHE_HITS = Counter("cache_hits", "Cache lookups answered from the cache.", ["cache"])
CACHE_MISSES = Counter("cache_misses", "Cache lookups that fell through.", ["cache"])
CIRCUIT_BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "Circuit breaker per downstream service: 0 closed, 1 half-open, 2 open.",
    ["downstream"],
)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def render_metrics() -> bytes:
    """The process's metrics in OpenMetrics text, the format that carries exemplars."""
    text: bytes = generate_latest(REGISTRY)
    return text


def exemplar_for(span_context: SpanContext | None) -> dict[str, str] | None:
    """An exemplar linking a metric sample to its trace, when the trace was sampled."""
    if span_context is None or not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return {"trace_id": format(span_context.trace_id, "032x")}


# Outbound calls retried after a transient failure (timeout, connection error, 502/503/504).
API_OPERATION_RETRIES = Counter(
    "api_operation_retries",
    "Outbound API call attempts retried after a transient failure.",
    ["operation", "reason"],
)
