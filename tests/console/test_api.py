"""The JSON API's filters, catalogues and error answers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Exemplar,
    Metric,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import (
    NOW,
    key_values,
    log_record,
    logs_request,
    metrics_request,
    new_span_id,
    new_trace_id,
    span,
    traces_request,
)
from .conftest import Console

PROTOBUF = "application/x-protobuf"
SECOND = 1_000_000_000
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


@pytest.fixture(scope="module")
def shop(console: Console) -> dict[str, Any]:
    """Four traces across two services with distinct names, times, durations and status."""
    suffix = uuid.uuid4().hex[:8]
    shop, pay = f"shop-{suffix}", f"pay-{suffix}"
    base = NOW + 3600 * SECOND
    ids = {k: new_trace_id() for k in ("t1", "t2", "t3", "t4")}
    roots = {k: new_span_id() for k in ids}
    shop_spans = [
        span(ids["t1"], roots["t1"], "GET /cart", kind=SERVER, start=base, duration_ms=100,
             attributes={"http.route": "/cart", "http.response.status_code": 200}),
        span(ids["t2"], roots["t2"], "GET /cart", kind=SERVER, start=base + SECOND,
             duration_ms=900, status=2, message="HTTP 500",
             attributes={"http.route": "/cart", "http.response.status_code": 500}),
        span(ids["t2"], new_span_id(), "SELECT cart", parent=roots["t2"], kind=CLIENT,
             start=base + SECOND + 50_000_000, duration_ms=800),
        span(ids["t3"], roots["t3"], "POST /checkout", kind=SERVER, start=base + 2 * SECOND,
             duration_ms=50, attributes={"flag": True}),
    ]  # fmt: skip
    pay_spans = [
        span(ids["t1"], new_span_id(), "charge", parent=roots["t1"], kind=CLIENT,
             start=base + 10_000_000, duration_ms=30, attributes={"customer.tier": "gold"}),
        span(ids["t4"], roots["t4"], "GET /health", kind=SERVER, start=base + 3 * SECOND,
             duration_ms=5),
    ]  # fmt: skip
    for service, spans, resource in (
        (shop, shop_spans, {"deployment.environment": f"staging-{suffix}"}),
        (pay, pay_spans, {}),
    ):
        body = traces_request(service, spans, resource=resource).SerializeToString()
        assert console.post("/v1/traces", body, PROTOBUF).status_code == 200
    for key, count in (("t1", 2), ("t2", 2), ("t3", 1), ("t4", 1)):
        console.trace(ids[key], spans=count)
    console.wait_for(lambda: len(console.api("/api/traces", service=shop).json()["traces"]) == 3)
    return {"shop": shop, "pay": pay, "base": base, "suffix": suffix, **ids}


def trace_ids(console: Console, **params: Any) -> list[str]:
    r = console.api("/api/traces", **params)
    assert r.status_code == 200, r.text
    return [t["trace_id"] for t in r.json()["traces"]]


def test_trace_summary_fields(console: Console, shop: dict[str, Any]) -> None:
    traces = console.api("/api/traces", service=shop["pay"]).json()["traces"]
    t1 = next(t for t in traces if t["trace_id"] == shop["t1"])
    assert t1 == {
        "trace_id": shop["t1"],
        "root_span_name": "GET /cart",
        "root_service_name": shop["shop"],
        "has_root": True,
        "start_time_unix_nano": shop["base"],
        "end_time_unix_nano": shop["base"] + 100_000_000,
        "duration_ms": 100.0,
        "span_count": 2,
        "error_count": 0,
        "services": sorted([shop["shop"], shop["pay"]]),
    }


def test_filter_by_service_newest_first(console: Console, shop: dict[str, Any]) -> None:
    assert trace_ids(console, service=shop["shop"]) == [shop["t3"], shop["t2"], shop["t1"]]
    assert trace_ids(console, service=shop["pay"]) == [shop["t4"], shop["t1"]]


def test_filter_by_name_status_and_duration(console: Console, shop: dict[str, Any]) -> None:
    s = shop["shop"]
    assert trace_ids(console, service=s, name="GET /cart") == [shop["t2"], shop["t1"]]
    assert trace_ids(console, service=s, status="error") == [shop["t2"]]
    assert trace_ids(console, service=s, status="unset") == [shop["t3"], shop["t2"], shop["t1"]]
    assert trace_ids(console, service=s, min_duration_ms="500") == [shop["t2"]]
    assert trace_ids(console, service=s, max_duration_ms="60") == [shop["t3"]]
    assert trace_ids(console, service=s, min_duration_ms="60", max_duration_ms="200") == [
        shop["t1"]
    ]


def test_order_and_limit(console: Console, shop: dict[str, Any]) -> None:
    s = shop["shop"]
    assert trace_ids(console, service=s, order="duration") == [shop["t2"], shop["t1"], shop["t3"]]
    assert trace_ids(console, service=s, limit="1") == [shop["t3"]]


def test_time_window_in_ns_and_iso(console: Console, shop: dict[str, Any]) -> None:
    s, base = shop["shop"], shop["base"]
    assert trace_ids(console, service=s, since=str(base + SECOND)) == [shop["t3"], shop["t2"]]
    until = datetime.fromtimestamp((base + 1.5 * SECOND) / SECOND, tz=UTC).isoformat()
    assert trace_ids(console, service=s, until=until) == [shop["t2"], shop["t1"]]
    since = datetime.fromtimestamp(base / SECOND + 0.5, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert trace_ids(console, service=s, since=since, until=until) == [shop["t2"]]


def test_attribute_filters_match_native_types(console: Console, shop: dict[str, Any]) -> None:
    s = shop["shop"]
    assert trace_ids(console, attr="customer.tier=gold", service=shop["pay"]) == [shop["t1"]]
    assert trace_ids(console, service=s, attr="http.response.status_code=500") == [shop["t2"]]
    assert trace_ids(console, service=s, attr="flag=true") == [shop["t3"]]
    # Resource attributes match too, and several attr filters must all hold on one span.
    staging = f"deployment.environment=staging-{shop['suffix']}"
    assert trace_ids(console, attr=staging) == [shop["t3"], shop["t2"], shop["t1"]]
    assert trace_ids(console, attr=[staging, "http.route=/cart"]) == [shop["t2"], shop["t1"]]
    assert trace_ids(console, service=s, attr="http.route=/nowhere") == []


def test_services_and_operations(console: Console, shop: dict[str, Any]) -> None:
    services = {s["name"]: s for s in console.api("/api/services").json()["services"]}
    assert services[shop["shop"]]["span_count"] == 4
    assert services[shop["pay"]]["span_count"] == 2
    operations = console.api(f"/api/services/{shop['shop']}/operations").json()["operations"]
    assert {"name": "GET /cart", "kind": "SERVER"} in operations
    assert {"name": "SELECT cart", "kind": "CLIENT"} in operations


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"status": "broken"}, "use error, ok or unset"),
        ({"limit": "0"}, "limit must be between"),
        ({"limit": "many"}, "not an integer"),
        ({"min_duration_ms": "-1"}, "must be a number >= 0"),
        ({"since": "9999-01-01T00:00:00Z"}, "out of range"),
        ({"until": "99999999999999999999"}, "out of range"),
        ({"min_duration_ms": "1e300"}, "must be a number >= 0"),
        ({"max_duration_ms": "fast"}, "not a number"),
        ({"since": "yesterday"}, "neither unix nanoseconds nor an ISO"),
        ({"attr": "no-equals-sign"}, "key=value"),
        ({"attr": 'bad"key=1'}, "must not contain quotes"),
        ({"order": "name"}, "use start or duration"),
    ],
)
def test_bad_trace_query_is_400(console: Console, params: dict[str, str], fragment: str) -> None:
    r = console.api("/api/traces", **params)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["detail"]


def test_trace_lookup_errors(console: Console) -> None:
    r = console.api("/api/traces/xyz")
    assert r.status_code == 400
    assert "32 hex" in r.json()["detail"]
    unknown = new_trace_id()
    r = console.api(f"/api/traces/{unknown}")
    assert r.status_code == 404
    assert r.json() == {"detail": f"trace {unknown} not found"}
    assert console.api(f"/api/traces/{unknown.upper()}").status_code == 404
    assert console.api("/api/traces/xyz/logs").status_code == 400
    assert console.api(f"/api/traces/{unknown}/logs").json() == {"logs": []}
    assert console.api("/api/nothing").status_code == 404


def test_health(console: Console) -> None:
    r = console.api("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


# --------------------------------------------------------------------------- logs


def test_log_search(console: Console) -> None:
    service = f"logs-{uuid.uuid4().hex[:8]}"
    trace_id, span_id = new_trace_id(), new_span_id()
    records = [
        log_record("user logged in", at=NOW),
        log_record("slow query took 900ms", severity=13, severity_text="WARN", at=NOW + 1),
        log_record(
            "payment failed: card_declined 100%",
            severity=17,
            severity_text="ERROR",
            trace_id=trace_id,
            span_id=span_id,
            at=NOW + 2,
            attributes={"payment.provider": "stripe"},
        ),
    ]
    r = console.post("/v1/logs", logs_request(service, records).SerializeToString(), PROTOBUF)
    assert r.status_code == 200

    def bodies(**params: Any) -> list[str]:
        res = console.api("/api/logs", service=service, **params)
        assert res.status_code == 200, res.text
        return [entry["body"] for entry in res.json()["logs"]]

    console.wait_for(lambda: len(bodies()) == 3)
    assert bodies() == [  # newest first
        "payment failed: card_declined 100%",
        "slow query took 900ms",
        "user logged in",
    ]
    assert bodies(q="PAYMENT") == ["payment failed: card_declined 100%"]
    assert bodies(q="100%") == ["payment failed: card_declined 100%"]  # % is literal
    assert bodies(q="card_d") == ["payment failed: card_declined 100%"]
    assert bodies(q="50%") == []
    assert bodies(severity="WARN") == [
        "payment failed: card_declined 100%",
        "slow query took 900ms",
    ]
    assert bodies(severity="warning") == bodies(severity="13")
    assert bodies(trace_id=trace_id) == ["payment failed: card_declined 100%"]
    assert bodies(attr="payment.provider=stripe") == ["payment failed: card_declined 100%"]
    assert bodies(limit="1") == ["payment failed: card_declined 100%"]
    assert bodies(since=str(NOW + 1), until=str(NOW + 1)) == ["slow query took 900ms"]
    for params in ({"severity": "LOUD"}, {"trace_id": "123"}, {"limit": "-5"}, {"since": "x"}):
        r = console.api("/api/logs", **params)
        assert r.status_code == 400, params


# --------------------------------------------------------------------------- metrics


def test_metrics_protobuf_with_histogram_and_exemplar(console: Console) -> None:
    suffix = uuid.uuid4().hex[:8]
    service = f"metrics-{suffix}"
    trace_id, span_id = new_trace_id(), new_span_id()
    duration = Metric(name=f"http.server.request.duration.{suffix}", unit="s", description="d")
    duration.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    for route, at, counts in (("/a", NOW, [1, 2, 0]), ("/b", NOW + SECOND, [0, 0, 4])):
        dp = duration.histogram.data_points.add(
            start_time_unix_nano=NOW - SECOND,
            time_unix_nano=at,
            count=sum(counts),
            sum=1.25,
            bucket_counts=counts,
            explicit_bounds=[0.1, 1.0],
            min=0.01,
            max=2.5,
        )
        dp.attributes.extend(key_values({"http.route": route}))
        if route == "/b":
            dp.exemplars.append(
                Exemplar(
                    time_unix_nano=at,
                    as_double=2.5,
                    trace_id=bytes.fromhex(trace_id),
                    span_id=bytes.fromhex(span_id),
                    filtered_attributes=key_values({"user": "u1"}),
                )
            )
    requests = Metric(name=f"requests.{suffix}", unit="{request}")
    requests.sum.is_monotonic = True
    requests.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    requests.sum.data_points.add(time_unix_nano=NOW, as_int=42)
    depth = Metric(name=f"queue.depth.{suffix}")
    depth.gauge.data_points.add(time_unix_nano=NOW, as_double=3.5)
    body = metrics_request(service, [duration, requests, depth]).SerializeToString()
    r = console.post("/v1/metrics", body, PROTOBUF)
    assert r.status_code == 200

    def catalogue() -> dict[str, Any] | None:
        found = {m["name"]: m for m in console.api("/api/metrics").json()["metrics"]}
        return found if duration.name in found and depth.name in found else None

    found = console.wait_for(catalogue)
    assert found[duration.name] == {
        "name": duration.name,
        "type": "histogram",
        "unit": "s",
        "description": "d",
        "services": [service],
        "temporality": "CUMULATIVE",
    }
    assert found[requests.name]["type"] == "sum"
    assert found[requests.name]["is_monotonic"] is True
    assert found[depth.name]["type"] == "gauge"

    result = console.api(f"/api/metrics/{duration.name}").json()
    assert [p["attributes"]["http.route"] for p in result["points"]] == ["/a", "/b"]  # by time
    point = result["points"][1]
    assert point["bucket_counts"] == [0, 0, 4]
    assert point["explicit_bounds"] == [0.1, 1.0]
    assert point["count"] == 4 and point["sum"] == 1.25
    assert point["min"] == 0.01 and point["max"] == 2.5
    assert point["start_time_unix_nano"] == NOW - SECOND
    assert point["exemplars"] == [
        {
            "time_unix_nano": NOW + SECOND,
            "value": 2.5,
            "trace_id": trace_id,
            "span_id": span_id,
            "attributes": {"user": "u1"},
        }
    ]
    assert point["resource"] == {"service.name": service}

    def routes(**params: Any) -> list[str]:
        res = console.api(f"/api/metrics/{duration.name}", **params)
        assert res.status_code == 200, res.text
        return [p["attributes"]["http.route"] for p in res.json()["points"]]

    assert routes(attr="http.route=/a") == ["/a"]
    assert routes(since=str(NOW + 1)) == ["/b"]
    assert routes(service=service) == ["/a", "/b"]
    assert routes(service="someone-else") == []
    assert routes(limit="1") == ["/b"]  # the most recent

    counter = console.api(f"/api/metrics/{requests.name}").json()["points"]
    assert counter[0]["value"] == 42 and isinstance(counter[0]["value"], int)
    assert console.api(f"/api/metrics/{depth.name}").json()["points"][0]["value"] == 3.5
    r = console.api(f"/api/metrics/nope.{suffix}")
    assert r.status_code == 404
    assert console.api(f"/api/metrics/{depth.name}", since="soon").status_code == 400


def test_metrics_otlp_json_exemplar_ids_are_hex(console: Console) -> None:
    suffix = uuid.uuid4().hex[:8]
    trace_id, span_id = new_trace_id(), new_span_id()
    doc = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": f"mj-{suffix}"}}
                    ]
                },
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": f"latency.{suffix}",
                                "unit": "ms",
                                "histogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": str(NOW),
                                            "count": "3",
                                            "sum": 30.0,
                                            "bucketCounts": ["1", "2"],
                                            "explicitBounds": [10.0],
                                            "exemplars": [
                                                {
                                                    "timeUnixNano": str(NOW),
                                                    "asDouble": 12.0,
                                                    "traceId": trace_id,
                                                    "spanId": span_id,
                                                }
                                            ],
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    r = console.post("/v1/metrics", json.dumps(doc).encode(), "application/json")
    assert r.status_code == 200, r.text
    assert r.json() == {}

    def points() -> list[dict[str, Any]] | None:
        res = console.api(f"/api/metrics/latency.{suffix}")
        return res.json()["points"] if res.status_code == 200 else None

    point = console.wait_for(points)[0]
    assert point["bucket_counts"] == [1, 2]
    assert point["count"] == 3
    assert point["exemplars"][0]["trace_id"] == trace_id
    assert point["exemplars"][0]["span_id"] == span_id
    info = next(
        m for m in console.api("/api/metrics").json()["metrics"] if m["name"] == f"latency.{suffix}"
    )
    assert info["temporality"] == "DELTA"
