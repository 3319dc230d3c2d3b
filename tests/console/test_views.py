"""The derived views' JSON API: waterfall, span detail, suggestions, service map, RED,
metric series, read-only SQL, export/import and the HTML pages."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Exemplar,
    Metric,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import BaseModel, TypeAdapter, ValidationError

from otel_lab.console.routes import schemas

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
MS = 1_000_000
MINUTE = 60 * SECOND
SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
PRODUCER, CONSUMER = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER
STACK = (
    "Traceback (most recent call last):\n  File \"orders.py\", line 7, in price\nKeyError: 'sku'\n"
)


@pytest.fixture(scope="module")
def world(console: Console) -> dict[str, Any]:
    """Ten requests gw -> users -> orders (+ postgresql, redis) and one api -> worker hop,
    in a minute-aligned window of their own; request 9 is slow (900 ms), request 5 fails."""
    sfx = uuid.uuid4().hex[:8]
    gw, users, orders, api, worker = (
        f"{n}-{sfx}" for n in ("gw", "users", "orders", "api", "worker")
    )
    base = NOW + (10 * 86400 + random.randint(0, 10_000) * 60) * SECOND
    base -= base % MINUTE
    spans: dict[str, list[Span]] = {gw: [], users: [], orders: [], api: [], worker: []}
    logs = []
    ids: list[dict[str, str]] = []
    for i in range(10):
        tid = new_trace_id()
        s = base + i * SECOND
        d = 900 if i == 9 else 100
        fail = i == 5
        sid = {k: new_span_id() for k in ("root", "gwc", "us", "db", "uc", "os", "redis")}
        ids.append({"trace_id": tid, **sid})
        http_get = {"http.request.method": "GET"}
        spans[gw] += [
            span(tid, sid["root"], "GET /orders/{id}", kind=SERVER, start=s, duration_ms=d,
                 status=2 if fail else 0, attributes={**http_get, "http.route": "/orders/{id}"}),
            span(tid, sid["gwc"], "GET", parent=sid["root"], kind=CLIENT, start=s + 5 * MS,
                 duration_ms=d - 10),
        ]  # fmt: skip
        spans[users] += [
            span(tid, sid["us"], "GET /users/{id}", parent=sid["gwc"], kind=SERVER,
                 start=s + 10 * MS, duration_ms=d - 20,
                 attributes={**http_get, "http.route": "/users/{id}"}),
            span(tid, sid["db"], "SELECT users", parent=sid["us"], kind=CLIENT, start=s + 12 * MS,
                 duration_ms=8, attributes={"db.system": "postgresql"}),
            span(tid, sid["uc"], "POST", parent=sid["us"], kind=CLIENT, start=s + 30 * MS,
                 duration_ms=d - 40),
        ]  # fmt: skip
        exception = {"exception.type": "KeyError", "exception.stacktrace": STACK}
        events = [("exception", s + 36 * MS, exception)] if fail else None
        spans[orders] += [
            span(tid, sid["os"], "POST /orders", parent=sid["uc"], kind=SERVER, start=s + 35 * MS,
                 duration_ms=d - 50, status=2 if fail else 0, events=events,
                 attributes={"http.request.method": "POST", "http.route": "/orders"}),
            span(tid, sid["redis"], "GET", parent=sid["os"], kind=CLIENT, start=s + 40 * MS,
                 duration_ms=2, attributes={"db.system": "redis", "cache.hit": i % 2 == 0}),
        ]  # fmt: skip
        logs.append((users, log_record(f"user lookup {i}", trace_id=tid, span_id=sid["us"],
                                       at=s + 11 * MS, attributes={"view.test": sfx})))  # fmt: skip
    orphan = new_span_id()
    spans[gw].append(span(ids[1]["trace_id"], orphan, "late orphan", parent=new_span_id(),
                          kind=INTERNAL, start=base + SECOND + 50 * MS, duration_ms=1))  # fmt: skip
    hop = new_trace_id()
    producer, consumer = new_span_id(), new_span_id()
    spans[api].append(span(hop, producer, "apply_async/enrich", kind=PRODUCER,
                           start=base + 20 * SECOND, duration_ms=1))  # fmt: skip
    spans[worker].append(span(hop, consumer, "run/enrich", parent=producer, kind=CONSUMER,
                              start=base + 21 * SECOND, duration_ms=30))  # fmt: skip
    for service, items in spans.items():
        r = console.post("/v1/traces", traces_request(service, items).SerializeToString(), PROTOBUF)
        assert r.status_code == 200
    by_service: dict[str, list[Any]] = {}
    for service, record in logs:
        by_service.setdefault(service, []).append(record)
    for service, records in by_service.items():
        r = console.post("/v1/logs", logs_request(service, records).SerializeToString(), PROTOBUF)
        assert r.status_code == 200
    for i in range(10):
        console.trace(ids[i]["trace_id"], spans=8 if i == 1 else 7)
    console.trace(hop, spans=2)
    return {"sfx": sfx, "gw": gw, "users": users, "orders": orders, "api": api,
            "worker": worker, "base": base, "ids": ids, "orphan": orphan, "hop": hop}  # fmt: skip


def window(world: dict[str, Any], seconds: int = 60) -> dict[str, str]:
    return {"since": str(world["base"]), "until": str(world["base"] + seconds * SECOND - 1)}


# --------------------------------------------------------------------------- trace views


def test_waterfall_is_a_depth_first_tree_with_self_time(
    console: Console, world: dict[str, Any]
) -> None:
    ids = world["ids"][0]
    r = console.api(f"/api/traces/{ids['trace_id']}/waterfall")
    assert r.status_code == 200
    wf = r.json()
    f = {name: i for i, name in enumerate(wf["fields"])}
    rows = wf["spans"]
    assert wf["span_count"] == 7 and wf["duration_ns"] == 100 * MS
    order = [row[f["span_id"]] for row in rows]
    assert order == [ids[k] for k in ("root", "gwc", "us", "db", "uc", "os", "redis")]
    assert [row[f["depth"]] for row in rows] == [0, 1, 2, 3, 3, 4, 5]
    assert [row[f["parent"]] for row in rows] == [-1, 0, 1, 2, 2, 4, 5]
    assert [row[f["subtree_end"]] for row in rows] == [7, 7, 7, 4, 7, 7, 7]
    self_ms = {row[f["span_id"]]: row[f["self_ns"]] / MS for row in rows}
    assert self_ms[ids["root"]] == 10  # 100 ms minus the 90 ms client call
    assert self_ms[ids["us"]] == 12  # 80 ms minus the 8 ms query and the 60 ms call
    assert self_ms[ids["redis"]] == 2
    services = wf["services"]
    assert [services[row[f["service"]]] for row in rows][:3] == [
        world["gw"],
        world["gw"],
        world["users"],
    ]
    assert rows[2][f["logs"]] == 1 and wf["log_count"] == 1


def test_waterfall_flags_orphans_and_exceptions(console: Console, world: dict[str, Any]) -> None:
    wf = console.api(f"/api/traces/{world['ids'][1]['trace_id']}/waterfall").json()
    f = {name: i for i, name in enumerate(wf["fields"])}
    orphan = next(r for r in wf["spans"] if r[f["span_id"]] == world["orphan"])
    assert orphan[f["flags"]] & 8 and orphan[f["parent"]] == -1 and orphan[f["depth"]] == 0
    failed = console.api(f"/api/traces/{world['ids'][5]['trace_id']}/waterfall").json()
    row = next(r for r in failed["spans"] if r[f["span_id"]] == world["ids"][5]["os"])
    assert row[f["flags"]] & 2 and row[f["status"]] == 2
    assert failed["error_count"] == 2
    assert console.api(f"/api/traces/{new_trace_id()}/waterfall").status_code == 404
    assert console.api("/api/traces/nothex/waterfall").status_code == 400


def test_span_detail_with_its_logs(console: Console, world: dict[str, Any]) -> None:
    ids = world["ids"][5]
    sp = console.api(f"/api/traces/{ids['trace_id']}/spans/{ids['os']}").json()
    assert sp["name"] == "POST /orders" and sp["status"]["code"] == "ERROR"
    assert sp["events"][0]["attributes"]["exception.stacktrace"] == STACK
    assert sp["resource"] == {"service.name": world["orders"]}
    assert sp["logs"] == []
    us = console.api(f"/api/traces/{ids['trace_id']}/spans/{ids['us']}").json()
    assert [log["body"] for log in us["logs"]] == ["user lookup 5"]
    assert console.api(f"/api/traces/{ids['trace_id']}/spans/{new_span_id()}").status_code == 404
    assert console.api(f"/api/traces/{ids['trace_id']}/spans/xyz").status_code == 400


def test_attribute_suggestions(console: Console, world: dict[str, Any]) -> None:
    keys = console.api("/api/attributes", signal="spans", service=world["orders"]).json()["keys"]
    by_key = {k["key"]: k for k in keys}
    assert by_key["http.route"]["count"] == 10
    assert by_key["db.system"]["source"] == "attribute"
    assert by_key["service.name"]["source"] == "resource"
    values = console.api("/api/attributes", signal="spans", service=world["users"], key="db.system")
    assert values.json()["values"] == [{"value": "postgresql", "count": 10}]
    logs = console.api("/api/attributes", signal="logs", service=world["users"], key="view.test")
    assert logs.json()["values"] == [{"value": world["sfx"], "count": 10}]
    assert console.api("/api/attributes", signal="nope").status_code == 400
    for key in ('a"b', "a\\b", "\x00", "a\nb"):  # not in a JSON path: a 400, never a 500
        refused = console.api("/api/attributes", key=key)
        assert refused.status_code == 400, (key, refused.text)
        assert "must not contain quotes, backslashes or controls" in refused.json()["detail"]


# --------------------------------------------------------------------------- service map


def test_service_map_edges(console: Console, world: dict[str, Any]) -> None:
    r = console.api("/api/service-map", **window(world))
    assert r.status_code == 200, r.text
    result = r.json()
    edges = {(e["source"], e["target"]): e for e in result["edges"]}
    gw, users, orders = world["gw"], world["users"], world["orders"]
    assert set(edges) == {
        (gw, users), (users, orders), (users, "db:postgresql"), (orders, "db:redis"),
        (world["api"], world["worker"]),
    }  # fmt: skip
    assert edges[(gw, users)]["calls"] == 10 and edges[(gw, users)]["kind"] == "http"
    assert edges[(gw, users)]["errors"] == 0
    assert edges[(users, orders)]["errors"] == 1
    assert edges[(users, orders)]["error_rate"] == pytest.approx(0.1)
    assert edges[(users, orders)]["rate_per_second"] == pytest.approx(10 / 60, rel=0.01)
    assert edges[(users, "db:postgresql")]["kind"] == "database"
    assert edges[(users, "db:postgresql")]["avg_duration_ms"] == pytest.approx(8)
    assert edges[(world["api"], world["worker"])]["kind"] == "messaging"
    nodes = {n["id"]: n for n in result["nodes"]}
    assert nodes["db:redis"]["kind"] == "database" and nodes["db:redis"]["name"] == "redis"
    assert nodes[gw]["spans"] == 21 and nodes[gw]["server_errors"] == 1
    assert result["traces_scanned"] == 11 and result["truncated"] is False
    capped = console.api("/api/service-map", **window(world), max_traces="3").json()
    assert capped["traces_scanned"] == 3 and capped["truncated"] is True
    assert console.api("/api/service-map", window="soon").status_code == 400


# --------------------------------------------------------------------------- RED


def test_red_per_service_and_route(console: Console, world: dict[str, Any]) -> None:
    r = console.api("/api/red", **window(world), buckets="60")
    assert r.status_code == 200, r.text
    red = r.json()
    assert red["bucket_seconds"] == 60
    mine = {g["name"]: g for g in red["services"] if world["sfx"] in g["name"]}
    assert set(mine) == {world["gw"], world["users"], world["orders"], world["worker"]}
    gw = mine[world["gw"]]
    assert gw["count"] == 10 and gw["errors"] == 1 and gw["error_rate"] == pytest.approx(0.1)
    assert gw["rate_per_second"] == pytest.approx(10 / 60, rel=0.01)
    assert gw["p50_ms"] == pytest.approx(100, rel=0.1)
    assert gw["p99_ms"] == pytest.approx(900, rel=0.1) and gw["max_ms"] == 900
    assert gw["slow_trace_id"] == world["ids"][9]["trace_id"]
    assert gw["error_trace_id"] == world["ids"][5]["trace_id"]
    (bucket,) = [b for b in gw["series"] if b["count"]]
    assert bucket["start_unix_nano"] == world["base"] and bucket["count"] == 10

    detail = console.api("/api/red", **window(world), service=world["gw"]).json()
    assert detail["service"]["count"] == 10
    (route,) = detail["routes"]
    assert route["route"] == "GET /orders/{id}"
    assert route["search"] == {"attr": ["http.route=/orders/{id}", "http.request.method=GET"]}
    # The jump from the slow bucket: trace search with the route's filter, slowest first.
    found = console.api("/api/traces", service=world["gw"], attr=route["search"]["attr"],
                        since=str(bucket["start_unix_nano"]), until=str(bucket["end_unix_nano"]),
                        order="duration").json()["traces"]  # fmt: skip
    assert found[0]["trace_id"] == world["ids"][9]["trace_id"] and len(found) == 10
    consumer = console.api("/api/red", **window(world), service=world["worker"]).json()
    assert consumer["routes"][0]["route"] == "run/enrich"
    assert consumer["routes"][0]["search"] == {"name": "run/enrich"}
    assert console.api("/api/red", route="x").status_code == 400


# --------------------------------------------------------------------------- metrics


def test_read_answers_match_their_documented_models(
    console: Console, world: dict[str, Any]
) -> None:
    """The response models in /api/openapi.json are documentation (the routes pass their
    JSON through), so this is what keeps them true: real answers validate, and a key the
    model does not name fails (the models forbid extras)."""
    sfx, base = world["sfx"], world["base"]
    latency = Metric(name=f"doc.lat.{sfx}", unit="s", description="documented")
    latency.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    latency.histogram.data_points.add(
        start_time_unix_nano=base, time_unix_nano=base + SECOND, count=2, sum=0.3,
        bucket_counts=[1, 1], explicit_bounds=[0.1],
    )  # fmt: skip
    gauge = Metric(name=f"doc.depth.{sfx}")
    gauge.gauge.data_points.add(time_unix_nano=base + SECOND, as_int=3)
    body = metrics_request(world["gw"], [latency, gauge]).SerializeToString()
    assert console.post("/v1/metrics", body, PROTOBUF).status_code == 200
    console.wait_for(lambda: console.api(f"/api/metrics/{gauge.name}").status_code == 200 or None)

    ids = world["ids"][5]
    tid = ids["trace_id"]
    # Models are pydantic models, or TypedDicts a query builds its answer as.
    answers: list[tuple[type[BaseModel] | type[Any], str, dict[str, str]]] = [
        (schemas.TracesOut, "/api/traces", {"service": world["orders"], **window(world)}),
        (schemas.TraceOut, f"/api/traces/{tid}", {}),
        (schemas.WaterfallOut, f"/api/traces/{tid}/waterfall", {}),
        (schemas.SpanOut, f"/api/traces/{tid}/spans/{ids['us']}", {}),
        (schemas.LogsOut, f"/api/traces/{tid}/logs", {}),
        (schemas.LogsOut, "/api/logs", {"service": world["users"], **window(world)}),
        (schemas.ServicesOut, "/api/services", {}),
        (schemas.OperationsOut, f"/api/services/{world['orders']}/operations", {}),
        (schemas.MetricsOut, "/api/metrics", {}),
        (schemas.MetricPointsOut, f"/api/metrics/{latency.name}", {}),
        (schemas.MetricPointsOut, f"/api/metrics/{gauge.name}", {}),
        (schemas.MetricSeriesOut, "/api/metric-series", {"name": latency.name, **window(world)}),
        (schemas.MetricSeriesOut, "/api/metric-series", {"name": gauge.name, **window(world)}),
        (schemas.ServiceMapOut, "/api/service-map", window(world)),
        (schemas.RedOut, "/api/red", window(world)),
        (schemas.RedOut, "/api/red", {"service": world["orders"], **window(world)}),
        (schemas.AttributeKeysOut, "/api/attributes", {"service": world["orders"]}),
        (schemas.AttributeValuesOut, "/api/attributes", {"key": "http.route"}),
    ]
    for model, path, params in answers:
        r = console.api(path, **params)
        assert r.status_code == 200, (path, r.text)
        TypeAdapter(model).validate_python(r.json())  # raises, naming the field, if they differ
    span = console.api(f"/api/traces/{tid}/spans/{ids['us']}").json()
    assert span["logs"] and span["status"]["code"] == "UNSET"
    with pytest.raises(ValidationError):
        schemas.SpanOut.model_validate({**span, "undocumented": 1})

    spec = console.api("/api/openapi.json").json()
    documented = spec["paths"]["/api/traces/{trace_id}"]["get"]["responses"]["200"]
    assert documented["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TraceOut"
    }


def test_metric_series_rates_percentiles_and_exemplars(
    console: Console, world: dict[str, Any]
) -> None:
    sfx, base = world["sfx"], world["base"]
    slow = world["ids"][9]
    counter = Metric(name=f"reqs.{sfx}", unit="{request}")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    latency = Metric(name=f"lat.{sfx}", unit="s")
    latency.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    gauge = Metric(name=f"depth.{sfx}")
    for k in range(12):
        at = base + (k * 10 + 5) * SECOND
        for route, per_interval in (("/a", 10), ("/b", 30)):
            dp = counter.sum.data_points.add(start_time_unix_nano=base, time_unix_nano=at,
                                             as_int=k * per_interval)  # fmt: skip
            dp.attributes.extend(key_values({"route": route}))
        hp = latency.histogram.data_points.add(
            start_time_unix_nano=base, time_unix_nano=at, count=10 * k, sum=0.5 * k,
            bucket_counts=[8 * k, 1 * k, 1 * k, 0], explicit_bounds=[0.1, 0.5, 1.0],
        )  # fmt: skip
        if k == 6:
            hp.exemplars.append(Exemplar(time_unix_nano=at, as_double=0.9,
                                         trace_id=bytes.fromhex(slow["trace_id"]),
                                         span_id=bytes.fromhex(slow["root"])))  # fmt: skip
        gauge.gauge.data_points.add(time_unix_nano=at, as_double=float(k))
    body = metrics_request(world["gw"], [counter, latency, gauge]).SerializeToString()
    assert console.post("/v1/metrics", body, PROTOBUF).status_code == 200
    params = {"since": str(base), "until": str(base + 120 * SECOND - 1), "buckets": "12"}

    def series(name: str, **extra: Any) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            r = console.api("/api/metric-series", name=name, **params, **extra)
            return r.json() if r.status_code == 200 and r.json()["points_read"] else None

        return console.wait_for(probe)

    rates = series(counter.name)
    assert rates["bucket_seconds"] == 10 and len(rates["series"]) == 2
    by_route = {s["labels"]["route"]: s for s in rates["series"]}
    assert "rate_per_second" not in by_route["/a"]["points"][0]  # no earlier point to diff
    assert by_route["/a"]["points"][5]["rate_per_second"] == pytest.approx(1.0)
    assert by_route["/b"]["points"][5]["rate_per_second"] == pytest.approx(3.0)
    grouped = series(counter.name, group_by="service.name")
    (total,) = grouped["series"]
    assert total["labels"] == {"service.name": world["gw"]}
    assert total["points"][5]["rate_per_second"] == pytest.approx(4.0)
    only_b = series(counter.name, attr="route=/b")
    assert [s["labels"]["route"] for s in only_b["series"]] == ["/b"]
    assert set(rates["dimensions"]["route"]) == {"/a", "/b"}

    hist = series(latency.name)
    point = hist["series"][0]["points"][5]
    assert point["count"] == 10 and point["rate_per_second"] == pytest.approx(1.0)
    assert point["avg"] == pytest.approx(0.05)
    assert point["p50"] <= 0.1 and 0.5 < point["p95"] <= 1.0 and 0.5 < point["p99"] <= 1.0
    (exemplar,) = hist["exemplars"]
    assert exemplar["trace_id"] == slow["trace_id"] and exemplar["span_id"] == slow["root"]
    values = series(gauge.name)["series"][0]["points"]
    assert [p.get("value") for p in values[:3]] == [0.0, 1.0, 2.0]
    assert console.api("/api/metric-series", name=f"none.{sfx}").status_code == 404


# --------------------------------------------------------------------------- SQL


def test_sql_reads_and_shows_ids_as_hex(console: Console, world: dict[str, Any]) -> None:
    tid = world["ids"][0]["trace_id"]
    r = console.api("/api/sql", q=f"SELECT trace_id, name FROM spans WHERE trace_id = x'{tid}'"
                    " ORDER BY start_ns LIMIT 2")  # fmt: skip
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["columns"] == ["trace_id", "name"]
    assert result["rows"] == [[tid, "GET /orders/{id}"], [tid, "GET"]]
    assert result["truncated"] is False
    ten = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10)"
    ten += " SELECT x FROM c"
    capped = console.http.post(console.ui_url + "/api/sql", json={"sql": ten, "limit": 3}).json()
    assert capped["rows"] == [[1], [2], [3]] and capped["truncated"] is True
    schema = console.api("/api/sql/schema").json()
    assert "spans" in {t["table"] for t in schema["tables"]} and schema["examples"]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM spans",
        "UPDATE services SET span_count = 0",
        "INSERT INTO meta VALUES ('x', 'y')",
        "DROP TABLE spans",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
        "PRAGMA journal_mode = DELETE",
        "CREATE TEMP TABLE t (x)",
        "SELECT load_extension('x')",
    ],
)
def test_sql_refuses_writes(console: Console, sql: str) -> None:
    r = console.api("/api/sql", q=sql)
    assert r.status_code == 400, r.text
    assert "read-only" in r.json()["detail"] or "not authorized" in r.json()["detail"]


def test_sql_errors_are_400(console: Console) -> None:
    assert "no such table" in console.api("/api/sql", q="SELECT * FROM nope").json()["detail"]
    assert console.api("/api/sql", q="").status_code == 400
    assert console.api("/api/sql", q="SELECT 1; SELECT 2").status_code == 400
    r = console.http.post(console.ui_url + "/api/sql", json={"query": 1})
    assert r.status_code == 400


# --------------------------------------------------------------------------- export/import


def test_export_trace_then_import_it_as_a_new_trace(
    console: Console, world: dict[str, Any]
) -> None:
    ids = world["ids"][5]
    r = console.api("/api/export", trace_id=ids["trace_id"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"]
    lines = r.text.splitlines()
    docs = [json.loads(line) for line in lines]
    assert set(docs[0]) == {"resourceSpans"} and set(docs[1]) == {"resourceLogs"}
    assert sum(len(ss["spans"]) for rs in docs[0]["resourceSpans"] for ss in rs["scopeSpans"]) == 7
    # The first line is plain OTLP JSON: the receiver takes it as is (a duplicate here).
    before = console.api("/api/stats").json()["duplicate_spans"]
    assert console.post("/v1/traces", lines[0].encode(), "application/json").status_code == 200
    console.wait_for(lambda: console.api("/api/stats").json()["duplicate_spans"] == before + 7)

    new_id = new_trace_id()
    renamed = r.text.replace(ids["trace_id"], new_id)
    imported = console.http.post(console.ui_url + "/api/import", content=renamed.encode(),
                                 headers={"content-type": "application/json"})  # fmt: skip
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == {"spans": 7, "logs": 1, "metric_points": 0, "rejected": 0}
    original = console.api(f"/api/traces/{ids['trace_id']}").json()["spans"]
    copy = console.trace(new_id, spans=7)["spans"]
    strip = ("trace_id",)
    assert [{k: v for k, v in s.items() if k not in strip} for s in copy] == [
        {k: v for k, v in s.items() if k not in strip} for s in original
    ]
    assert [log["body"] for log in console.api(f"/api/traces/{new_id}/logs").json()["logs"]] == [
        "user lookup 5"
    ]


def test_export_range_of_metrics_round_trips(console: Console, world: dict[str, Any]) -> None:
    sfx, base = world["sfx"], world["base"]
    gauge = Metric(name=f"export.gauge.{sfx}", unit="1")
    gauge.gauge.data_points.add(time_unix_nano=base + 3 * SECOND, as_int=7)
    body = metrics_request(world["api"], [gauge]).SerializeToString()
    assert console.post("/v1/metrics", body, PROTOBUF).status_code == 200
    console.wait_for(lambda: console.api(f"/api/metrics/{gauge.name}").status_code == 200)
    r = console.api("/api/export", since=str(base), until=str(base + 5 * SECOND), signals="metrics")
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    names = {m["name"] for doc in lines for rm in doc["resourceMetrics"]
             for sm in rm["scopeMetrics"] for m in sm["metrics"]}  # fmt: skip
    assert gauge.name in names
    mine = [doc for doc in lines if gauge.name in json.dumps(doc)]
    lines_back = "\n".join(json.dumps(d) for d in mine).encode()
    imported = console.http.post(console.ui_url + "/api/import", content=lines_back)
    assert imported.status_code == 200, imported.text
    points = console.api(f"/api/metrics/{gauge.name}").json()["points"]
    assert [p["value"] for p in points] == [7, 7] and isinstance(points[0]["value"], int)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"not json", "not JSON"),
        (b'{"hello": 1}', "none of resourceSpans"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "not hex"),
    ],
)
def test_bad_import_is_400(console: Console, body: bytes, fragment: str) -> None:
    r = console.http.post(console.ui_url + "/api/import", content=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["detail"]


def test_export_parameters(console: Console) -> None:
    assert console.api("/api/export", trace_id=new_trace_id()).status_code == 404
    assert console.api("/api/export", signals="spans").status_code == 400
    assert console.api("/api/export", trace_id="abc").status_code == 400


# --------------------------------------------------------------------------- pages


@pytest.mark.parametrize("path", ["/", "/logs", "/metrics", "/map", "/red", "/sql", "/store"])
def test_pages_are_served_with_a_strict_policy(console: Console, path: str) -> None:
    r = console.http.get(console.ui_url + path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["server-timing"].startswith("app;dur=")
    html = r.text
    assert "<script>" not in html  # page data is JSON in a non-executable script element
    for src in ("http://", "https://"):
        assert f'src="{src}' not in html and f'href="{src}' not in html  # no CDN


def test_trace_page_and_find(console: Console, world: dict[str, Any]) -> None:
    tid = world["ids"][0]["trace_id"]
    r = console.http.get(console.ui_url + f"/trace/{tid}")
    assert r.status_code == 200 and f'"trace_id": "{tid}"' in r.text
    assert console.http.get(console.ui_url + "/trace/<script>").status_code in (400, 404)
    bad = console.http.get(console.ui_url + "/trace/%3Cb%3Eboom%3C%5Cb%3E")
    assert bad.status_code == 400 and "&lt;b&gt;boom" in bad.text and "<b>boom" not in bad.text
    found = console.http.get(console.ui_url + "/find", params={"trace_id": f" {tid.upper()} "})
    assert found.status_code == 303 and found.headers["location"] == f"/trace/{tid}"
    assert console.http.get(console.ui_url + "/static/console.js").status_code == 200
