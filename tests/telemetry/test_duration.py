"""``PlainHistogram`` gives the points the SDK's histogram gives for the same measurements.

Both are fed the same values under the same spans and collected by the official
``InMemoryMetricReader``; the collections are encoded by the official OTLP encoder and
decoded, and compared message for message (timestamps aside: each side takes its own).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import SpanContext

from otel_lab.telemetry.duration import SERVER_DURATION, Instrument, MeterProvider, PlainHistogram
from otel_lab.telemetry.http_client import CLIENT_DURATION

RESOURCE = Resource.create({"service.name": "probe"})
SCOPE = "otel_lab.http"
# (seconds, method, status, route, error type): every bucket, +Inf, no route, an error.
OBSERVATIONS = [
    (0.0001, "GET", 200, "/health", None),
    (0.003, "GET", 200, "/health", None),
    (0.005, "GET", 200, "/health", None),  # on a bound: in that bucket, as the SDK's bisect
    (0.07, "POST", 201, "/api/v1/process", None),
    (0.3, "POST", 504, "/api/v1/process", "upstream_timeout"),
    (12.0, "GET", 200, "/items/{item_id}", None),
    (0.02, "GET", 404, None, None),
    (0.02, "_OTHER", 500, "/boom", "RuntimeError"),
]


def _server_attributes(method: str, status: int, route: str | None,
                       error: str | None) -> dict[str, Any]:  # fmt: skip
    """What the middleware gave the SDK's histogram before (written out again here)."""
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "http.response.status_code": status,
    }
    if route is not None:
        attributes["http.route"] = route
    if error is not None:
        attributes["error.type"] = error
    return attributes


class Pair:
    """The SDK's histogram and a PlainHistogram, each on its provider and reader."""

    def __init__(
        self,
        exemplar_filter: object = None,
        readers: int = 1,
        aggregation: object = None,
        instrument: Instrument = SERVER_DURATION,
        official_attributes: Callable[..., dict[str, Any]] = _server_attributes,
    ) -> None:
        self.official_attributes = official_attributes
        options: dict[str, Any] = {"resource": RESOURCE}
        if exemplar_filter is not None:
            options["exemplar_filter"] = exemplar_filter
        preferred = {sdk_metrics.Histogram: aggregation} if aggregation is not None else None
        self.official_readers = [
            InMemoryMetricReader(preferred_aggregation=preferred) for _ in range(readers)
        ]
        self.ours_readers = [
            InMemoryMetricReader(preferred_aggregation=preferred) for _ in range(readers)
        ]
        official = sdk_metrics.MeterProvider(metric_readers=self.official_readers, **options)
        ours = MeterProvider(metric_readers=self.ours_readers, **options)
        self.histogram = official.get_meter(SCOPE).create_histogram(
            instrument.name,
            unit=instrument.unit,
            description=instrument.description,
            explicit_bucket_boundaries_advisory=list(instrument.boundaries),
        )
        store = PlainHistogram.on(ours, SCOPE, instrument)
        assert store is not None
        self.store = store
        # Something else on the same scope and another scope: the merge keeps them.
        for provider in (official, ours):
            provider.get_meter(SCOPE).create_counter("other").add(1)
            provider.get_meter("elsewhere").create_counter("elsewhere").add(2)

    def record(self, seconds: float, *key: Any, span_context: SpanContext) -> None:
        self.histogram.record(seconds, self.official_attributes(*key))
        self.store.record(seconds, key, span_context)

    def collect(self, index: int = 0) -> tuple[list[dict], list[dict]]:
        official = self.official_readers[index].get_metrics_data()
        ours = self.ours_readers[index].get_metrics_data()
        return _decoded(official), _decoded(ours)


def _decoded(data: MetricsData | None) -> list[dict]:
    """The OTLP export request, decoded, timestamps checked and taken out, sorted."""
    assert data is not None
    message = MessageToDict(encode_metrics(data))
    now = time.time_ns()
    for resource_metrics in message["resourceMetrics"]:
        resource_metrics["scopeMetrics"].sort(key=lambda s: s["scope"]["name"])
        for scope_metrics in resource_metrics["scopeMetrics"]:
            scope_metrics["metrics"].sort(key=lambda m: m["name"])
            for metric in scope_metrics["metrics"]:
                kind = "histogram" if "histogram" in metric else "sum"
                for point in metric[kind]["dataPoints"]:
                    for field in ("startTimeUnixNano", "timeUnixNano"):
                        assert now - 60e9 < int(point.pop(field)) <= now
                    for exemplar in point.get("exemplars", []):
                        assert now - 60e9 < int(exemplar.pop("timeUnixNano")) <= now
                metric[kind]["dataPoints"].sort(key=lambda p: repr(p.get("attributes")))
    return message["resourceMetrics"]


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    yield TracerProvider(sampler=ALWAYS_ON).get_tracer("probe")


def _record_all(pair: Pair, tracer: trace.Tracer, observations: list) -> None:
    for observation in observations:
        with tracer.start_as_current_span("request") as span:
            pair.record(*observation, span_context=span.get_span_context())


def test_the_points_and_exemplars_are_the_sdks(tracer: trace.Tracer) -> None:
    pair = Pair()
    _record_all(pair, tracer, OBSERVATIONS)
    official, ours = pair.collect()
    assert ours == official
    histogram = next(
        m["histogram"]
        for s in ours[0]["scopeMetrics"]
        for m in s["metrics"]
        if m["name"] == SERVER_DURATION.name
    )
    assert histogram["aggregationTemporality"] == "AGGREGATION_TEMPORALITY_CUMULATIVE"
    assert all(p["exemplars"][0]["traceId"] for p in histogram["dataPoints"])


def test_the_otlp_exporters_histogram_aggregation_is_the_same(tracer: trace.Tracer) -> None:
    """The OTLP metric exporters ask for ``ExplicitBucketHistogramAggregation()`` (from
    ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION``), not the default."""
    exporter = OTLPMetricExporter()
    assert type(exporter._preferred_aggregation[sdk_metrics.Histogram]) is (
        ExplicitBucketHistogramAggregation
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    assert (
        PlainHistogram.on(MeterProvider(metric_readers=[reader]), SCOPE, SERVER_DURATION)
        is not None
    )
    pair = Pair(aggregation=exporter._preferred_aggregation[sdk_metrics.Histogram])
    _record_all(pair, tracer, OBSERVATIONS)
    official, ours = pair.collect()
    assert ours == official


def test_later_collections_stay_cumulative_with_only_new_exemplars(
    tracer: trace.Tracer,
) -> None:
    pair = Pair(readers=2)
    _record_all(pair, tracer, OBSERVATIONS[:4])
    official, ours = pair.collect(0)
    assert ours == official
    _record_all(pair, tracer, OBSERVATIONS[2:])
    for index in (0, 1):  # reader 1 collects for the first time: every last exemplar
        official, ours = pair.collect(index)
        assert ours == official
    official, ours = pair.collect(0)  # nothing new: the counts, no exemplars
    assert ours == official
    assert "exemplars" not in repr(ours)


def test_unsampled_requests_give_no_exemplar_by_default() -> None:
    pair = Pair()
    _record_all(pair, TracerProvider(sampler=ALWAYS_OFF).get_tracer("probe"), OBSERVATIONS)
    official, ours = pair.collect()
    assert ours == official
    assert "exemplars" not in repr(ours)


def test_the_always_on_exemplar_filter_is_followed() -> None:
    pair = Pair(exemplar_filter=AlwaysOnExemplarFilter())
    _record_all(pair, TracerProvider(sampler=ALWAYS_OFF).get_tracer("probe"), OBSERVATIONS)
    official, ours = pair.collect()
    assert ours == official
    assert "exemplars" in repr(ours)


def test_random_observations_agree(tracer: trace.Tracer) -> None:
    chooser = random.Random(8)
    observations = [
        (chooser.expovariate(20), chooser.choice(["GET", "POST"]), chooser.choice([200, 503]),
         chooser.choice(["/a", "/b", None]), None)
        for _ in range(500)
    ]  # fmt: skip
    pair = Pair()
    _record_all(pair, tracer, observations)
    official, ours = pair.collect()
    assert ours == official


def test_delta_readers_and_other_providers_keep_the_sdks_instrument() -> None:
    delta = InMemoryMetricReader(
        preferred_temporality={sdk_metrics.Histogram: AggregationTemporality.DELTA}
    )
    assert PlainHistogram.on(MeterProvider(metric_readers=[delta]), SCOPE, SERVER_DURATION) is None
    exponential = InMemoryMetricReader(
        preferred_aggregation={sdk_metrics.Histogram: ExponentialBucketHistogramAggregation()}
    )
    assert (
        PlainHistogram.on(MeterProvider(metric_readers=[exponential]), SCOPE, SERVER_DURATION)
        is None
    )
    official = sdk_metrics.MeterProvider(metric_readers=[InMemoryMetricReader()])
    assert PlainHistogram.on(official, SCOPE, SERVER_DURATION) is None
    cumulative = MeterProvider(metric_readers=[InMemoryMetricReader()])
    assert PlainHistogram.on(cumulative, SCOPE, SERVER_DURATION) is not None


def _client_attributes(address: str | None, port: int | None, method: str, status: int | None,
                       error: str | None) -> dict[str, Any]:  # fmt: skip
    """What the HTTP client middleware gave the SDK's histogram before."""
    attributes: dict[str, Any] = {}
    if address is not None:
        attributes["server.address"] = address
    if port is not None:
        attributes["server.port"] = port
    attributes["http.request.method"] = method
    if status is not None:
        attributes["http.response.status_code"] = status
    if error is not None:
        attributes["error.type"] = error
    return attributes


def test_the_client_duration_is_the_sdks(tracer: trace.Tracer) -> None:
    pair = Pair(instrument=CLIENT_DURATION, official_attributes=_client_attributes)
    observations = [
        (0.004, "user-service", 8011, "POST", 200, None),
        (0.08, "user-service", 8011, "POST", 200, None),
        (0.6, "order-service", 8012, "POST", 503, "503"),
        (2.0, "order-service", 8012, "_OTHER", None, "TimeoutError"),
        (0.01, None, None, "GET", 200, None),
    ]
    _record_all(pair, tracer, observations)
    official, ours = pair.collect()
    assert ours == official
    assert "exemplars" in repr(ours)
