"""The shapes of the main read endpoints' answers, for ``/api/openapi.json``.

They document, they do not serialise: the routes still answer a ``ConsoleJSON`` built by
the queries, which FastAPI passes through untouched (a ``Response`` skips the response
model), so the hot reads (a 10,000-span trace, a 1,000-row log search) pay nothing for the
schema. What keeps the two in step is a test: ``tests/console/test_views.py`` validates each
endpoint's real answer against its model, and the models forbid keys they do not name.
"""

from __future__ import annotations

from typing import Literal

# pydantic's own JSON value (jsontypes.JSONValue is an alias pydantic cannot build models of)
from pydantic import BaseModel, ConfigDict, JsonValue

from otel_lab.console import analytics
from otel_lab.console.queries import TraceSummary

SpanKindName = Literal["INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
StatusName = Literal["UNSET", "OK", "ERROR"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scope(_Strict):
    name: str
    version: str


class TracesOut(_Strict):
    traces: list[TraceSummary]


class SpanStatus(_Strict):
    code: StatusName
    message: str


class Span(_Strict):
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: SpanKindName
    service_name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    duration_ms: float
    status: SpanStatus
    attributes: dict[str, JsonValue]
    events: list[dict[str, JsonValue]]
    links: list[dict[str, JsonValue]]
    resource: dict[str, JsonValue]
    scope: Scope


class TraceOut(_Strict):
    trace_id: str
    spans: list[Span]


class LogRecord(_Strict):
    time_unix_nano: int
    observed_time_unix_nano: int | None
    severity_number: int
    severity_text: str
    body: JsonValue  # text, or the JSON value the record carried
    attributes: dict[str, JsonValue]
    trace_id: str | None
    span_id: str | None
    event_name: str | None
    service_name: str
    resource: dict[str, JsonValue]
    scope: Scope


class LogsOut(_Strict):
    logs: list[LogRecord]


class SpanOut(Span):
    """One span and its logs (oldest first)."""

    logs: list[LogRecord]


class WaterfallOut(_Strict):
    """Compact rows: each span is an array ordered as ``fields`` names (see
    ``queries.trace_waterfall``), ``services`` the names the rows index."""

    trace_id: str
    start_time_unix_nano: int
    duration_ns: int
    span_count: int
    error_count: int
    log_count: int
    services: list[str]
    fields: list[str]
    spans: list[list[JsonValue]]


class ServiceInfo(_Strict):
    name: str
    first_seen_unix_nano: int
    last_seen_unix_nano: int
    span_count: int
    log_count: int
    metric_point_count: int


class ServicesOut(_Strict):
    services: list[ServiceInfo]


class Operation(_Strict):
    name: str
    kind: SpanKindName


class OperationsOut(_Strict):
    operations: list[Operation]


class MetricInfo(_Strict):
    name: str
    type: str
    unit: str
    description: str
    services: list[str]
    is_monotonic: bool | None = None
    temporality: str | None = None


class MetricsOut(_Strict):
    metrics: list[MetricInfo]


class MetricPoint(BaseModel):
    """A point; besides these, the fields of its type (``value``, or ``count``, ``sum``,
    ``bucket_counts``, ... for histograms and summaries)."""

    model_config = ConfigDict(extra="allow")

    service_name: str
    attributes: dict[str, JsonValue]
    start_time_unix_nano: int | None
    time_unix_nano: int
    exemplars: list[dict[str, JsonValue]]
    resource: dict[str, JsonValue]


class MetricPointsOut(MetricInfo):
    points: list[MetricPoint]


class AttributeKey(_Strict):
    key: str
    count: int | None  # None: a resource attribute (not counted)
    source: Literal["attribute", "resource"]


class AttributeKeysOut(_Strict):
    keys: list[AttributeKey]


class AttributeValue(_Strict):
    value: str
    count: int


class AttributeValuesOut(_Strict):
    key: str
    values: list[AttributeValue]


# Built as TypedDicts by the queries themselves, which are their models too.
ServiceMapOut = analytics.ServiceMap
RedOut = analytics.Red


class MetricSeriesPoint(BaseModel):
    """A bucket; besides its start, the values of the metric's type (``value``, ``rate``,
    ``count``, ``avg``, ``p50`` ... as ``analytics.metric_series`` derives them)."""

    model_config = ConfigDict(extra="allow")

    start_unix_nano: int


class MetricSeries(_Strict):
    labels: dict[str, JsonValue]
    points: list[MetricSeriesPoint]


class MetricSeriesOut(_Strict):
    name: str
    type: str
    unit: str
    description: str
    is_monotonic: bool | None
    temporality: Literal["DELTA", "CUMULATIVE"] | None
    since_unix_nano: int
    until_unix_nano: int
    bucket_seconds: float
    points_read: int
    truncated: bool
    series: list[MetricSeries]
    exemplars: list[dict[str, JsonValue]]
    dimensions: dict[str, list[str]]
