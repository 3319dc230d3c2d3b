"""The console's data model: the OTLP enums it stores as numbers, and the rows it writes."""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple, TypeAlias, TypedDict

# A value SQLite stores or binds as a statement's parameter.
SQLValue: TypeAlias = str | int | float | bytes | None


class SpanKind(IntEnum):
    """``Span.SpanKind`` of opentelemetry/proto/trace/v1/trace.proto."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(IntEnum):
    """``Status.StatusCode`` of opentelemetry/proto/trace/v1/trace.proto."""

    UNSET = 0
    OK = 1
    ERROR = 2


class AggregationTemporality(IntEnum):
    """``AggregationTemporality`` of opentelemetry/proto/metrics/v1/metrics.proto."""

    UNSPECIFIED = 0
    DELTA = 1
    CUMULATIVE = 2


# --------------------------------------------------------------------------- rows
# What the decoder (otlp.py) produces and the writer inserts, field for field in the order
# of the table's columns (store/schema.py), so a row is also the INSERT's parameters.


class ResourceRow(NamedTuple):
    id: int
    service_name: str
    attributes: str | None


class ScopeRow(NamedTuple):
    id: int
    name: str
    version: str | None
    attributes: str | None


class SpanRow(NamedTuple):
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: int  # SpanKind
    service_name: str
    start_ns: int
    end_ns: int
    duration_ns: int
    status_code: int  # StatusCode
    status_message: str | None
    attributes: str | None
    events: str | None
    links: str | None
    resource_id: int
    scope_id: int


class LogRow(NamedTuple):
    time_ns: int
    observed_ns: int | None
    severity_number: int
    severity_text: str | None
    body: str | None
    body_is_json: int
    attributes: str | None
    trace_id: bytes | None
    span_id: bytes | None
    event_name: str | None
    service_name: str
    resource_id: int
    scope_id: int


class MetricRow(NamedTuple):
    id: int
    name: str
    type: str
    unit: str | None
    description: str | None
    is_monotonic: int | None
    temporality: int | None


# The summary tables' rows, in column order (store/schema.py).
# services: name, first_seen_ns, last_seen_ns, span_count, log_count, metric_point_count
ServiceSummaryRow: TypeAlias = tuple[str, int, int, int, int, int]
# traces: trace_id, start_ns, end_ns, duration_ns, span_count, error_count, root_name,
# root_service, has_root, services (a JSON array)
TraceSummaryRow: TypeAlias = tuple[bytes, int, int, int, int, int, str | None, str | None, int, str]
# red: service_name, route, minute, count, errors, sum_ns, min_ns, max_ns, hist (JSON),
# slow_trace_id, error_trace_id, search (JSON)
RedRow: TypeAlias = tuple[
    str, str, int, int, int, int, int, int, str, bytes | None, bytes | None, str | None
]


class Buckets(TypedDict):
    offset: int
    bucket_counts: list[int]


class Quantile(TypedDict):
    quantile: float
    value: float


class PointData(TypedDict, total=False):
    """``metric_points.data`` (JSON): the fields of a histogram, an exponential histogram or
    a summary point, as the decoder writes them."""

    count: int
    sum: float | None
    min: float
    max: float
    bucket_counts: list[int]  # histogram
    explicit_bounds: list[float]
    scale: int  # exponential histogram
    zero_count: int
    zero_threshold: float
    positive: Buckets
    negative: Buckets
    quantile_values: list[Quantile]  # summary


class PointRow(NamedTuple):
    metric_id: int
    service_name: str
    attributes: str | None
    start_ns: int | None
    time_ns: int
    value: int | float | None
    data: str | None
    exemplars: str | None
    resource_id: int
    scope_id: int
