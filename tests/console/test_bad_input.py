"""Inputs that answered 500 (or took the console's memory) before, found by fuzzing: odd
PromQL on the Prometheus-compatible API, and OTLP metric points that the receiver accepts
but the metric views could not read (NaN values, non-finite histogram fields, exponential
histograms whose bounds overflow a float, histograms with more counts than buckets)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
)

from .builders import NOW, metrics_request
from .conftest import Console

PROTOBUF = "application/x-protobuf"
SECOND = 1_000_000_000


@pytest.mark.parametrize(
    ("path", "query"),
    [
        # re.error from an invalid regular expression
        ("/api/prom/query", 'label_replace(vector(1), "a", "$1", "b", "(.*")'),
        ("/api/prom/query_range", 'label_replace(vector(1), "a", "$1", "b", "(.*")'),
    ],
)
def test_invalid_promql_is_a_prometheus_style_400(console: Console, path: str, query: str) -> None:
    r = console.api(path, query=query)
    assert r.status_code == 400, r.text
    assert r.json()["errorType"] == "bad_data"
    assert "label_replace" in r.json()["error"]


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("round(vector(1.5), 0)", "NaN"),  # Prometheus: v * (1/0) / (1/0); was a ZeroDivisionError
        ("round(vector(1.25), 0.5)", "1.5"),
        ("exp(vector(1000))", "+Inf"),  # math.exp raises OverflowError there
    ],
)
def test_promql_functions_at_their_edges_answer_as_prometheus(
    console: Console, query: str, value: str
) -> None:
    r = console.api("/api/prom/query", query=query)
    assert r.status_code == 200, r.text
    ((_, shown),) = [sample["value"] for sample in r.json()["data"]["result"]]
    assert shown == value


@pytest.mark.parametrize(
    "query", ["up offset 9999999999y", "count_over_time(up[99999999999999999999d])"]
)
def test_offsets_and_ranges_past_int64_nanoseconds_select_nothing(
    console: Console, query: str
) -> None:
    """The store holds int64 nanoseconds; a selection reaching centuries before 1970 was an
    OverflowError from SQLite (500) on a range query."""
    r = console.api("/api/prom/query_range", query=query, start="1000", end="2000", step="100")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success", "data": {"resultType": "matrix", "result": []}}


def _delta_histogram(name: str, at: int) -> Metric:
    metric = Metric(name=name)
    metric.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    metric.histogram.data_points.add(
        time_unix_nano=at, count=4, sum=math.nan, min=-math.inf, max=math.inf,
        bucket_counts=[1, 2, 1], explicit_bounds=[0.1, 1.0],
    )  # fmt: skip
    return metric


def _exponential(name: str, at: int, scale: int, offset: int, buckets: int) -> Metric:
    metric = Metric(name=name)
    metric.exponential_histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    dp = metric.exponential_histogram.data_points.add(
        time_unix_nano=at, count=buckets, sum=1.0, scale=scale
    )
    dp.positive.offset = offset
    dp.positive.bucket_counts.extend([1] * buckets)
    return metric


def test_odd_metric_points_are_read_not_answered_500(console: Console) -> None:
    """Each point below was accepted and then made /api/metric-series answer 500: a NaN
    gauge (SQLite stores NaN as NULL), a histogram whose sum, min and max are not finite
    (stored as text in JSON), exponential histograms whose bounds pass float's range (at
    scale 0 they were exact integers of up to 2,000 digits: seconds and gigabytes for a
    point of 100,000 buckets)."""
    sfx = uuid.uuid4().hex[:8]
    at = NOW + 3 * SECOND
    gauge = Metric(name=f"gauge.{sfx}")
    gauge.gauge.data_points.add(time_unix_nano=at, as_double=math.nan)
    gauge.gauge.data_points.add(time_unix_nano=at + SECOND, as_double=2.0)
    nan_only = Metric(name=f"nan.{sfx}")
    nan_only.gauge.data_points.add(time_unix_nano=at, as_double=math.nan)
    wide = _exponential(f"wide.{sfx}", at, scale=0, offset=0, buckets=2000)
    far = _exponential(f"far.{sfx}", at, scale=0, offset=2**31 - 1, buckets=3)
    coarse = _exponential(f"coarse.{sfx}", at, scale=-10, offset=-(2**31), buckets=3)
    # Outside the data model's [-10, 20]: refused at the door, like an out-of-range time.
    invalid = _exponential(f"invalid.{sfx}", at, scale=100, offset=0, buckets=3)
    # Five counts for one bound: the bounds of buckets 2 to 4 do not exist (IndexError).
    mismatched = Metric(name=f"mismatched.{sfx}")
    mismatched.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    mismatched.histogram.data_points.add(
        time_unix_nano=at, count=15, bucket_counts=[1, 2, 3, 4, 5], explicit_bounds=[1.0]
    )
    summary = Metric(name=f"summary.{sfx}")
    dp = summary.summary.data_points.add(time_unix_nano=at, count=3, sum=math.nan)
    dp.quantile_values.add(quantile=0.5, value=math.inf)
    metrics = [gauge, nan_only, _delta_histogram(f"hist.{sfx}", at), wide, far, coarse,
               invalid, mismatched, summary]  # fmt: skip
    r = console.post("/v1/metrics", metrics_request(f"odd-{sfx}", metrics).SerializeToString(),
                     PROTOBUF)  # fmt: skip
    assert r.status_code == 200, r.text
    refused = ExportMetricsServiceResponse.FromString(r.content).partial_success
    assert refused.rejected_data_points == 2
    assert "scale must be in [-10, 20]" in refused.error_message
    assert "bucket_counts must be empty or one longer" in refused.error_message

    window = {"since": str(NOW), "until": str(NOW + 10 * SECOND), "buckets": "10"}

    def series(name: str) -> list[dict[str, Any]]:
        def probe() -> list[dict[str, Any]] | None:
            r = console.api("/api/metric-series", name=name, **window)
            assert r.status_code in (200, 404), r.text  # 404 until the point is written
            return r.json()["series"][0]["points"] if r.status_code == 200 else None

        return console.wait_for(probe)

    values = series(gauge.name)
    assert "value" not in values[3] and values[4]["value"] == 2.0  # NaN is a gap
    assert all("value" not in p for p in series(nan_only.name))
    hist = series(f"hist.{sfx}")[3]
    assert hist["count"] == 4 and hist["avg"] == "NaN"  # ConsoleJSON writes NaN as text
    assert hist["p50"] == pytest.approx(0.55)
    # 2,000 buckets (1, 2], (2, 4], ...: the median observation is the 1,000th.
    assert series(wide.name)[3]["p50"] == pytest.approx(2.0**1000)
    assert series(far.name)[3]["p50"] == "NaN"  # inf - inf: bounds past float's range
    assert series(coarse.name)[3]["count"] == 3
    assert series(summary.name)[3]["quantiles"] == {"0.5": "Infinity"}
    for name in (invalid.name, mismatched.name):
        refused_series = console.api("/api/metric-series", name=name, **window)
        assert refused_series.status_code == 200 and refused_series.json()["series"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # one document nested past Python's recursion limit
        b'{"resourceSpans": []}\n' + b'{"a": ' * 50_000,  # JSON Lines, the second line so
    ],
)
def test_import_of_json_nested_too_deeply_is_a_400(console: Console, body: bytes) -> None:
    """json.loads raises RecursionError there, which is no ValueError: it was a 500."""
    r = console.http.post(console.ui_url + "/api/import", content=body)
    assert r.status_code == 400, r.text
    assert "nested too deeply" in r.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/api/traces", "/api/logs", "/api/metric-series", "/api/metrics/some.metric"]
)
def test_a_thousand_attribute_filters_are_a_400(console: Console, path: str) -> None:
    """Each filter is a condition in one SQL expression: SQLite refused 1,000 of them
    ("Expression tree is too large"), which was a 500. At most 50 (and as many group_by
    keys: grouping by 3,000 held a metric-series request for minutes)."""
    filters = [("attr", f"k{i}=v") for i in range(1001)]
    r = console.http.get(console.ui_url + path, params=[*filters, ("name", "some.metric")])
    assert r.status_code == 400, r.text
    assert "at most 50" in r.json()["detail"]
    keys = [("group_by", f"k{i}") for i in range(51)]
    r = console.http.get(console.ui_url + "/api/metric-series", params=[*keys, ("name", "x")])
    assert r.status_code == 400 and "at most 50" in r.json()["detail"], r.text


def test_the_schema_documents_the_errors_the_api_answers(console: Console) -> None:
    """A bad parameter is a 400 here (the 422s of FastAPI become 400s), which the schema
    said was a 422; schemathesis' status_code_conformance check (ST103) caught it."""
    doc = console.api("/api/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert "422" not in codes, (method, path)
            if operation.get("parameters") or "requestBody" in operation:
                assert "400" in codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            for code in codes - {"200"}:
                assert "application/json" in operation["responses"][code]["content"], code
    r = console.api("/api/traces", limit="0")
    assert r.status_code == 400 and "limit" in r.json()["detail"]


def test_the_largest_duration_filter_the_schema_allows_is_served(console: Console) -> None:
    """The schema's maximum, in float, became 2^63 ns: an OverflowError from SQLite (500);
    schemathesis' boundary values found it."""
    r = console.api("/api/traces", min_duration_ms="0", max_duration_ms="9223372036854.775")
    assert r.status_code == 200, r.text


def test_a_405_allows_every_method_of_the_path(console: Console) -> None:
    """/api/sql takes GET and POST; Starlette's 405 named only the first route's."""
    r = console.http.request("OPTIONS", console.ui_url + "/api/sql")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers


def test_the_schema_says_export_sends_json_lines(console: Console) -> None:
    """/api/export streams OTLP JSON Lines; its document said application/json (FastAPI's
    default for the router), which a client generated from it would try to parse whole."""
    doc = console.api("/api/openapi.json").json()
    responses = doc["paths"]["/api/export"]["get"]["responses"]
    assert list(responses["200"]["content"]) == ["application/x-ndjson"]
    assert "application/json" in responses["404"]["content"]  # an unknown trace_id
    r = console.api("/api/export", trace_id="0" * 31 + "1")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    r = console.api("/api/export", signals="logs")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
