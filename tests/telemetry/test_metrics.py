"""The middleware's Prometheus series, kept in plain numbers, against prometheus_client's own
Counter and Histogram (its default buckets) fed the same observations: the same OpenMetrics
text; and the one set of duration buckets every histogram of the package uses."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

from otel_lab.telemetry.duration import SERVER_DURATION
from otel_lab.telemetry.http_client import CLIENT_DURATION
from otel_lab.telemetry.metrics import API_OPERATION, DB_OPERATION, LATENCY_BUCKETS, RequestSeries

# The advisory ExplicitBucketBoundaries of http.server.request.duration and
# http.client.request.duration (semantic conventions, HTTP metrics, stable since 1.23).
SEMCONV_HTTP_DURATION = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

# (method, path, status, seconds, trace ID or None): bucket edges, +Inf, no exemplar.
OBSERVATIONS = [
    ("GET", "/health", "200", 0.0004, "a" * 32),
    ("GET", "/health", "200", 0.005, "b" * 32),  # on a bound: counted in that bucket
    ("GET", "/health", "200", 0.0051, None),
    ("GET", "/health", "503", 0.3, "c" * 32),
    ("GET", "/health", "503", 0.07, "e" * 32),  # (0.05, 0.075]
    ("GET", "/health", "200", 0.75, None),  # on the 0.75 bound
    ("GET", "/items/{item_id}", "200", 12.5, "d" * 32),  # above the last bound: +Inf
    ("POST", "/items", "201", 0.02, None),
]


def test_the_exposition_is_prometheus_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)  # the exemplars' timestamps
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    series = RequestSeries()
    ours.register(series)
    requests = Counter(
        "requests",
        "Total number of HTTP requests processed.",
        ["method", "path", "status"],
        registry=theirs,
    )
    latency = Histogram(
        "request_latency_seconds",
        "Request latency in seconds.",
        ["method", "path"],
        registry=theirs,  # its DEFAULT_BUCKETS
    )
    for method, path, status, seconds, trace_id in OBSERVATIONS:
        count, observed = series.series(method, path, status)
        count[0] += 1
        observed.observe(seconds, trace_id)
        requests.labels(method, path, status).inc()
        exemplar = {"trace_id": trace_id} if trace_id else None
        latency.labels(method, path).observe(seconds, exemplar=exemplar)

    text = generate_latest(ours).decode()
    inf_bucket = 'request_latency_seconds_bucket{le="+Inf",method="GET",path="/items/{item_id}"}'
    assert f'{inf_bucket} 1.0 # {{trace_id="{"d" * 32}"}} 12.5 1700000000.25' in text
    assert text == generate_latest(theirs).decode()


def test_one_set_of_duration_buckets() -> None:
    """Server and client durations (OTel) and the Prometheus latency histograms share the
    semconv bounds, so a server's and a client's histogram of a call compare bucket by bucket."""
    assert list(LATENCY_BUCKETS) == SEMCONV_HTTP_DURATION
    assert (*LATENCY_BUCKETS, math.inf) == Histogram.DEFAULT_BUCKETS
    assert SERVER_DURATION.boundaries is LATENCY_BUCKETS
    assert CLIENT_DURATION.boundaries is LATENCY_BUCKETS
    for histogram in (DB_OPERATION, API_OPERATION):
        assert tuple(histogram._upper_bounds) == (*LATENCY_BUCKETS, math.inf)
