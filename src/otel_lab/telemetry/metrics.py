"""Prometheus metrics served on every service's ``/metrics`` (OpenMetrics, with exemplars).

The names are the ones the original services used (``requests_total``,
``request_latency_seconds``, ...) so their dashboards work unchanged; ``path`` is always a
route template, never a raw path.
"""

from __future__ import annotations

import math
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

from opentelemetry.trace import SpanContext
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import REGISTRY
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

# `_created` series double the exposition size and no dashboard here uses them.
disable_created_metrics()

# The one set of duration bucket bounds (seconds) of the package: the stable HTTP semantic
# conventions' advisory boundaries for http.server.request.duration and
# http.client.request.duration, which are also prometheus_client's default buckets. The
# Prometheus latency histograms use them too, so a server's and a client's histogram of the
# same call compare bucket by bucket (and histogram_quantile reads both alike).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_LE = tuple(floatToGoString(bound) for bound in (*LATENCY_BUCKETS, math.inf))


class Latency:
    """One ``request_latency_seconds`` series: per-bucket counts, the sum, and the last
    exemplar (trace ID, value, time) of each bucket, as prometheus_client keeps them."""

    __slots__ = ("counts", "exemplars", "sum")

    def __init__(self) -> None:
        self.counts = [0] * len(_LE)
        self.exemplars: list[tuple[str, float, float] | None] = [None] * len(_LE)
        self.sum = 0.0

    def observe(self, seconds: float, trace_id: str | None) -> None:
        index = bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds, or +Inf
        self.counts[index] += 1
        self.sum += seconds
        if trace_id is not None:
            self.exemplars[index] = (trace_id, seconds, time.time())


class RequestSeries:
    """``requests_total`` and ``request_latency_seconds`` of the HTTP middleware, kept in
    plain numbers and turned into metric families when scraped.

    prometheus_client's Counter and Histogram take a lock for each value they change and
    build and validate an exemplar per observation: 13 us of a request inside the request
    loop (``scripts/bench_middleware.py --ablate``). Only the event loop serving the
    requests changes these numbers; a scrape reads them as they are, like the client's own
    histogram, whose buckets are not read atomically either.
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], list[int]] = {}
        self._latency: dict[tuple[str, str], Latency] = {}

    def series(self, method: str, path: str, status: str) -> tuple[list[int], Latency]:
        """The request count (a one-element list) and the latency of (method, path, status)."""
        count = self._requests.setdefault((method, path, status), [0])
        latency = self._latency.get((method, path))
        if latency is None:
            latency = self._latency[(method, path)] = Latency()
        return count, latency

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return CounterMetricFamily(
            "requests", "Total number of HTTP requests processed.", labels=_REQUEST_LABELS
        ), HistogramMetricFamily(
            "request_latency_seconds", "Request latency in seconds.", labels=_REQUEST_LABELS[:2]
        )

    def collect(self) -> Iterator[Metric]:
        requests, latency = self._families()
        for labels, seen in list(self._requests.items()):
            requests.add_metric(labels, float(seen[0]))
        yield requests
        for method_path, series in list(self._latency.items()):
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            cumulative = 0
            for le, in_bucket, exemplar in zip(_LE, series.counts, series.exemplars, strict=True):
                cumulative += in_bucket
                if exemplar is None:
                    buckets.append((le, float(cumulative)))
                else:
                    trace_id, value, at = exemplar
                    buckets.append(
                        (le, float(cumulative), Exemplar({"trace_id": trace_id}, value, at))
                    )
            latency.add_metric(method_path, buckets, series.sum)
        yield latency

    def describe(self) -> Iterator[Metric]:
        """The names, so the registry refuses a second metric of the same name."""
        yield from self._families()


_REQUEST_LABELS = ["method", "path", "status"]
REQUEST_SERIES = RequestSeries()
REGISTRY.register(REQUEST_SERIES)

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
