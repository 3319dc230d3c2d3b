"""Duration histograms kept in plain numbers, exported by the SDK's readers.

The SDK's ``Histogram.record`` cost about 18 us of a traced request inside the request loop
(``scripts/bench_middleware.py --ablate``): a ``Measurement`` object, the attributes copied
and hashed, two locks, and the trace-based exemplar looked up again from the context. The
server middleware (``http.server.request.duration``) and the HTTP client middleware
(``http.client.request.duration``) record their one value per call into a
:class:`PlainHistogram` instead (a dict lookup by a tuple, a bisect, a few additions), and
:class:`MeterProvider`, the SDK's with one addition, hands those points to each of its
readers at collection time next to the SDK's own, as the specification's MetricProducer
would (SDK 1.45 has none). The points are the ones the SDK's explicit-bucket histogram makes
for the same measurements, exemplars included: ``tests/telemetry/test_duration.py``
compares the two, encoded by the official OTLP encoder and decoded.

It covers what the services run: cumulative temporality (the default), the default
aggregation or the OTLP exporters' explicit buckets, no views, a standard exemplar filter.
For anything else :meth:`PlainHistogram.on` answers None and :func:`duration_histogram`
records through the SDK's own instrument, as it does with providers that are not this
package's (zero-code mode).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Exemplar,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics._internal.instrument import _Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import (
    Aggregation,
    DefaultAggregation,
    ExplicitBucketHistogramAggregation,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from otel_lab.telemetry.metrics import LATENCY_BUCKETS

# Exemplar per bucket: (sequence number, value, time, span ID, trace ID).
_Exemplar = tuple[int, float, int, int | None, int | None]


class _Series:
    """One attribute set: per-bucket counts, sum, min, max, each bucket's last exemplar."""

    __slots__ = ("attributes", "counts", "exemplars", "max", "min", "start", "sum")

    def __init__(self, attributes: dict[str, str | int], buckets: int) -> None:
        self.attributes = attributes
        self.start = time.time_ns()  # the SDK's: when the attribute set was first seen
        self.counts = [0] * buckets
        self.exemplars: list[_Exemplar | None] = [None] * buckets
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf


Key = tuple[Any, ...]


@dataclass(frozen=True)
class Instrument:
    """A duration histogram kept in plain numbers: its name, description, advisory bucket
    bounds, and the attributes of a series' key (a tuple, cheaper to look up than a dict;
    the attributes in the order the SDK would have been given them)."""

    name: str
    description: str
    boundaries: tuple[float, ...]
    attributes: Callable[[Key], dict[str, str | int]]
    unit: str = "s"


class PlainHistogram:
    """One instrument's series, changed only by the event loop that records (the services'
    requests) and read by the readers' threads as it is, like the Prometheus series."""

    def __init__(self, instrument: Instrument, scope: InstrumentationScope, exemplars: str) -> None:
        self.instrument = instrument
        self.scope = scope
        self.boundaries = instrument.boundaries
        self._exemplars = exemplars  # "trace_based", "always_on" or "always_off"
        self._series: dict[Key, _Series] = {}
        self._sequence = 0
        self._collected: dict[int, int] = {}  # reader id -> sequence number at its last collect

    @classmethod
    def on(
        cls, meter_provider: metrics.MeterProvider | None, scope: str, instrument: Instrument
    ) -> PlainHistogram | None:
        """A histogram whose points ``meter_provider`` (None: the global one) exports, or
        None where it cannot give what the SDK's instrument would (then use that)."""
        provider = meter_provider or metrics.get_meter_provider()
        if not isinstance(provider, MeterProvider) or provider.disabled:
            return None
        exemplars = provider.exemplar_filter_name()
        if exemplars is None or not provider.readers_take_plain_histograms():
            return None
        store = cls(instrument, InstrumentationScope(scope), exemplars)
        provider.add_producer(store.produce)
        return store

    def record(self, seconds: float, key: Key, span_context: SpanContext) -> None:
        """What ``Histogram.record`` with the attributes of ``key`` does, ``span_context``
        being the current span's (the exemplar's trace)."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new_series(key)
        index = bisect_left(self.boundaries, seconds)
        series.counts[index] += 1
        series.sum += seconds
        if seconds < series.min:
            series.min = seconds
        if seconds > series.max:
            series.max = seconds
        mode = self._exemplars
        if mode == "trace_based":
            if not span_context.trace_flags.sampled:
                return
        elif mode == "always_off":
            return
        self._sequence += 1
        valid = span_context.is_valid
        series.exemplars[index] = (
            self._sequence,
            seconds,
            time.time_ns(),
            span_context.span_id if valid else None,
            span_context.trace_id if valid else None,
        )

    def _new_series(self, key: Key) -> _Series:
        if len(self._series) > 4096:  # as the middleware's Prometheus children: bounded
            self._series.clear()
        return _Series(self.instrument.attributes(key), len(self.boundaries) + 1)

    def produce(self, reader: MetricReader) -> tuple[InstrumentationScope, Metric] | None:
        """The cumulative points for ``reader``, with the exemplars it has not collected yet
        (the SDK's reservoirs are emptied by each collection of their reader)."""
        now = time.time_ns()
        since = self._collected.get(id(reader), 0)
        until = self._collected[id(reader)] = self._sequence  # later ones: the next collection
        points = []
        for series in list(self._series.values()):
            counts = tuple(series.counts)
            exemplars = [
                Exemplar({}, value, at, span_id, trace_id)
                for sequence, value, at, span_id, trace_id in (
                    e for e in series.exemplars if e is not None
                )
                if since < sequence <= until
            ]
            points.append(
                HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=series.start,
                    time_unix_nano=now,
                    count=sum(counts),
                    sum=series.sum,
                    bucket_counts=counts,
                    explicit_bounds=self.boundaries,
                    min=series.min,
                    max=series.max,
                    exemplars=exemplars,
                )
            )
        if not points:
            return None
        data = Histogram(points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        instrument = self.instrument
        metric = Metric(instrument.name, instrument.description, instrument.unit, data)
        return self.scope, metric


class SdkHistogram:
    """The same ``record`` through the SDK's own histogram instrument."""

    def __init__(
        self, meter_provider: metrics.MeterProvider | None, scope: str, instrument: Instrument
    ) -> None:
        self.attributes = instrument.attributes
        self.histogram = metrics.get_meter(scope, meter_provider=meter_provider).create_histogram(
            instrument.name,
            unit=instrument.unit,
            description=instrument.description,
            explicit_bucket_boundaries_advisory=list(instrument.boundaries),
        )

    def record(self, seconds: float, key: Key, span_context: SpanContext) -> None:
        # The exemplar comes from the current context, as ever with the SDK.
        self.histogram.record(seconds, self.attributes(key))


def duration_histogram(
    meter_provider: metrics.MeterProvider | None, scope: str, instrument: Instrument
) -> PlainHistogram | SdkHistogram:
    """``instrument`` in plain numbers where ``meter_provider`` (None: the global one)
    exports them, else through the SDK's instrument."""
    store = PlainHistogram.on(meter_provider, scope, instrument)
    return store if store is not None else SdkHistogram(meter_provider, scope, instrument)


def _server_attributes(key: Key) -> dict[str, str | int]:
    method, status_code, route, error_type = key
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "http.response.status_code": status_code,
    }
    if route is not None:
        attributes["http.route"] = route
    if error_type is not None:
        attributes["error.type"] = error_type
    return attributes


# The server middleware's, keyed by (method, status code, route or None, error type or None);
# the semconv advisory bounds, as the client's and the Prometheus request_latency_seconds.
SERVER_DURATION = Instrument(
    "http.server.request.duration",
    "Duration of HTTP server requests.",
    LATENCY_BUCKETS,
    _server_attributes,
)


_Producer = Callable[[MetricReader], "tuple[InstrumentationScope, Metric] | None"]

_FILTERS = {
    TraceBasedExemplarFilter: "trace_based",
    AlwaysOnExemplarFilter: "always_on",
    AlwaysOffExemplarFilter: "always_off",
}


def _advisory_explicit_buckets(aggregation: Aggregation) -> bool:
    if isinstance(aggregation, DefaultAggregation):
        return True
    return (
        type(aggregation) is ExplicitBucketHistogramAggregation
        and aggregation._boundaries is None
        and aggregation._record_min_max
    )


class MeterProvider(sdk_metrics.MeterProvider):
    """The SDK's MeterProvider whose readers also collect the metrics of producers added to
    it (:meth:`PlainHistogram.produce`), merged into the SDK's own under the same resource."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._producers: list[_Producer] = []
        for reader in self._metric_readers:
            # The SDK gave each reader its measurement consumer's collect; wrap it.
            reader._set_collect_callback(partial(self._collect, reader._collect))  # type: ignore[arg-type]

    @property
    def disabled(self) -> bool:
        return bool(self._disabled)

    def exemplar_filter_name(self) -> str | None:
        return _FILTERS.get(type(self._sdk_config.exemplar_filter))

    def readers_take_plain_histograms(self) -> bool:
        """Every reader wants histograms cumulative, in explicit buckets with the
        instrument's advisory bounds and min/max (the default aggregation, or the OTLP
        exporters' ``ExplicitBucketHistogramAggregation()``), and there are no views."""
        return not self._sdk_config.views and all(
            reader._instrument_class_temporality[_Histogram] is AggregationTemporality.CUMULATIVE
            and _advisory_explicit_buckets(reader._instrument_class_aggregation[_Histogram])
            for reader in self._metric_readers
        )

    def add_producer(self, producer: _Producer) -> None:
        self._producers.append(producer)

    def _collect(
        self,
        sdk_collect: Callable[..., MetricsData | None],
        reader: MetricReader,
        timeout_millis: float = 10_000,
    ) -> MetricsData | None:
        data: MetricsData | None = sdk_collect(reader, timeout_millis=timeout_millis)
        produced = [p for p in (producer(reader) for producer in self._producers) if p]
        if not produced:
            return data
        resource = self._sdk_config.resource
        scopes: list[ScopeMetrics] = []
        if data is not None:
            for resource_metrics in data.resource_metrics:  # one: the provider's resource
                scopes.extend(resource_metrics.scope_metrics)
        for scope, metric in produced:
            for index, scope_metrics in enumerate(scopes):
                if scope_metrics.scope == scope:
                    scopes[index] = ScopeMetrics(
                        scope, [*scope_metrics.metrics, metric], scope_metrics.schema_url
                    )
                    break
            else:
                scopes.append(ScopeMetrics(scope, [metric], scope.schema_url or ""))
        return MetricsData([ResourceMetrics(resource, scopes, resource.schema_url)])
