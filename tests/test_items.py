"""The items service end to end: items in PostgreSQL, cache-aside through Valkey, enrichment on
the worker, all in one trace that the console returns."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlparse

import httpx
import redis

from otel_lab.runtime.harness import RunningSystem
from tests.conftest import (
    Console,
    Span,
    children_of,
    has_logs,
    has_spans,
    served,
    span_named,
    trace_id_of,
)


def _db_system(span: Span) -> str | None:
    attributes = span["attributes"]
    return attributes.get("db.system.name", attributes.get("db.system"))


def _db_spans(spans: list[Span], parent: Span | None = None) -> list[Span]:
    """PostgreSQL client spans, optionally only the direct children of ``parent``."""
    return [
        s
        for s in spans
        if _db_system(s) == "postgresql"
        and (parent is None or s["parent_span_id"] == parent["span_id"])
    ]


def _wait_enriched(api: httpx.Client, item_id: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/items/{item_id}").json()
        if body["status"] == "enriched":
            return body
        time.sleep(0.2)
    raise AssertionError(f"item {item_id} not enriched after {timeout} s")


def test_create_item_is_one_trace_from_api_to_worker(api: httpx.Client, console: Console) -> None:
    response = api.post("/items", json={"name": "Trace me", "description": "one trace, four hops"})
    assert response.status_code == 201
    item = response.json()
    assert item["name"] == "Trace me" and item["status"] == "pending" and item["id"] > 0
    trace_id = trace_id_of(response)

    # The api's spans and the worker's: its task span ends after every other span it made.
    worker_done = has_spans(("worker", "run/item_enrichment"))
    spans = console.trace(trace_id, until=lambda spans: served("api")(spans) and worker_done(spans))
    server = span_named(spans, "POST /items", "api")
    assert server["kind"] == "SERVER" and server["parent_span_id"] is None
    assert server["attributes"]["http.route"] == "/items"
    assert server["attributes"]["http.response.status_code"] == 201
    assert server["resource"]["service.name"] == "api"
    assert {"service.version", "service.instance.id", "deployment.environment.name"} <= set(
        server["resource"]
    )

    insert = [s for s in _db_spans(spans, server) if s["name"].startswith("INSERT")]
    assert insert, "the INSERT is a child of the server span"

    publish = span_named(spans, "apply_async/item_enrichment", "api")
    assert publish["kind"] == "PRODUCER" and publish["parent_span_id"] == server["span_id"]
    run = span_named(spans, "run/item_enrichment", "worker")
    assert run["kind"] == "CONSUMER" and run["parent_span_id"] == publish["span_id"]
    enrich = span_named(spans, "item.enrich", "worker")
    assert enrich["parent_span_id"] == run["span_id"]
    assert enrich["attributes"]["item.id"] == item["id"]
    assert any(s["name"].startswith("UPDATE") for s in _db_spans(spans, enrich))

    worker_logs = console.logs(
        trace_id, until=lambda logs: any(log["body"] == "item_enriched" for log in logs)
    )
    enriched_log = next(log for log in worker_logs if log["body"] == "item_enriched")
    assert enriched_log["service_name"] == "worker"
    assert enriched_log["span_id"] == enrich["span_id"]


def test_read_misses_then_hits_the_cache(api: httpx.Client, console: Console) -> None:
    item = api.post("/items", json={"name": "Cached"}).json()
    enriched = _wait_enriched(api, item["id"])
    assert enriched["slug"] == "cached" and enriched["word_count"] == 1

    # The worker wrote the fresh copy through to the cache, so this read hits.
    hit = api.get(f"/items/{item['id']}")
    assert hit.status_code == 200 and hit.json() == enriched
    hit_spans = console.trace(
        trace_id_of(hit), until=has_spans(("api", "GET /items/{item_id}"), ("api", "GET"))
    )
    hit_server = span_named(hit_spans, "GET /items/{item_id}", "api")
    assert hit_server["attributes"]["cache.hit"] is True
    assert not _db_spans(hit_spans), "a cache hit does not touch PostgreSQL"
    assert [s["name"] for s in children_of(hit_spans, hit_server)] == ["GET"]


def test_cache_miss_reads_the_database_and_fills_the_cache(
    api: httpx.Client, console: Console, system: RunningSystem
) -> None:
    item = api.post("/items", json={"name": "Evicted"}).json()
    _wait_enriched(api, item["id"])
    redis.Redis.from_url(system.redis_url).delete(f"item:{item['id']}")

    miss = api.get(f"/items/{item['id']}")
    assert miss.status_code == 200
    spans = console.trace(
        trace_id_of(miss),
        until=has_spans(("api", "GET /items/{item_id}"), ("api", "GET"), "SET", "SELECT*"),
    )
    server = span_named(spans, "GET /items/{item_id}", "api")
    assert server["attributes"]["cache.hit"] is False
    child_names = [s["name"] for s in children_of(spans, server)]
    assert child_names[0] == "GET" and "SET" in child_names
    assert any(n.startswith("SELECT") for n in child_names)
    assert _db_system(span_named(spans, "SET")) == "redis"


def test_metrics_count_requests_and_cache_results_with_exemplars(api: httpx.Client) -> None:
    def sample(text: str, pattern: str) -> float:
        match = re.search(pattern + r" ([0-9.e+]+)", text)
        return float(match.group(1)) if match else 0.0

    item = api.post("/items", json={"name": "Counted"}).json()
    _wait_enriched(api, item["id"])
    before = api.get("/metrics").text
    for _ in range(3):
        assert api.get(f"/items/{item['id']}").status_code == 200
    after = api.get("/metrics")
    assert after.headers["content-type"].startswith("application/openmetrics-text")
    text = after.text
    route = r'requests_total\{method="GET",path="/items/\{item_id\}",status="200"\}'
    assert sample(text, route) - sample(before, route) == 3
    hits = r'cache_hits_total\{cache="items"\}'
    assert sample(text, hits) - sample(before, hits) == 3
    assert re.search(r'worker_queue_depth\{queue="celery"\} \d', text)
    assert "/items/1" not in text and "/items/2" not in text, "labels are route templates"
    exemplar = re.search(
        r'request_latency_seconds_bucket\{le="[^"]+",method="GET",path="/items/\{item_id\}"\} '
        r'[0-9.]+ # \{trace_id="([0-9a-f]{32})"\}',
        text,
    )
    assert exemplar, "latency buckets carry the trace id as an exemplar"


def test_logs_are_json_lines_with_trace_and_request_ids(
    api: httpx.Client, console: Console, system: RunningSystem
) -> None:
    response = api.get("/health", headers={"X-Request-ID": "items-log-check"})
    assert response.headers["x-request-id"] == "items-log-check"
    trace_id = trace_id_of(response)
    exported = console.logs(trace_id, until=has_logs("request_completed"))
    completed = next(log for log in exported if log["body"] == "request_completed")
    assert completed["attributes"]["request_id"] == "items-log-check"
    assert completed["attributes"]["status_code"] == 200

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = system.log_records("api")
        mine = [line for line in lines if line.get("request_id") == "items-log-check"]
        if mine:
            break
        time.sleep(0.2)
    assert mine, "the api's stdout log has the request's line"
    line = mine[-1]
    assert line["trace_id"] == trace_id and len(line["span_id"]) == 16
    assert {"timestamp", "level", "logger", "message", "service"} <= set(line)
    assert line["service"] == "api" and line["message"] == "request_completed"


def test_request_id_is_echoed_or_replaced_when_unsafe(api: httpx.Client) -> None:
    assert (
        api.get("/health", headers={"X-Request-ID": "demo-123"}).headers["x-request-id"]
        == "demo-123"
    )
    generated = api.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for unsafe in (
        "a" * 500,
        "<script>alert(1)</script>",
        "two words",
        "ünïcode".encode("latin-1"),
    ):
        echoed = api.get("/health", headers={"X-Request-ID": unsafe}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), unsafe


def test_request_id_with_crlf_is_replaced(system: RunningSystem) -> None:
    """A raw request: no HTTP client will send CR/LF in a header value on purpose."""
    url = urlparse(system.url("api"))
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc\rInjected: yes\r\n"
            b"Connection: close\r\n\r\n"
        )
        reply = sock.recv(65536).decode("latin-1")
    status = reply.split("\r\n", 1)[0]
    # Either the server refuses the malformed header outright, or the ID is replaced.
    if " 200 " in status:
        request_id = re.search(r"x-request-id: (\S+)", reply, re.IGNORECASE).group(1)
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    else:
        assert " 400 " in status


def test_bad_input_gets_422_json_with_field_errors(api: httpx.Client) -> None:
    for body in ({}, {"name": ""}, {"name": 5}, {"name": "x" * 201}, {"name": "ok", "extra": 1}):
        response = api.post("/items", json=body)
        assert response.status_code == 422, body
        errors = response.json()["detail"]
        assert errors and all("loc" in e and "msg" in e for e in errors)
    not_json = api.post("/items", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    for bad_id in ("abc", "0", "-1", "99999999999"):
        assert api.get(f"/items/{bad_id}").status_code == 422, bad_id


def test_unknown_item_is_404_json(api: httpx.Client) -> None:
    response = api.get("/items/2147483000")
    assert response.status_code == 404
    assert response.json()["detail"] == "item 2147483000 not found"
    assert response.headers["content-type"] == "application/json"


def test_readiness_checks_database_and_cache(api: httpx.Client) -> None:
    body = api.get("/ready").json()
    assert body == {
        "status": "ready",
        "service": "api",
        "checks": {"database": "ok", "cache": "ok"},
    }


def test_swagger_ui_is_served_offline(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert all(api.get(a).status_code == 200 for a in assets)


def test_otlp_metrics_reach_the_console_with_route_and_exemplar(
    api: httpx.Client, console: Console
) -> None:
    """The stable ``http.server.request.duration`` goes over OTLP too, labelled by route,
    and its exemplars lead to the request's trace."""
    for _ in range(3):
        api.get("/health")
    deadline = time.monotonic() + 15
    points: list[dict] = []
    while time.monotonic() < deadline:
        response = console.client.get(
            "/api/metrics/http.server.request.duration",
            params={"service": "api", "attr": "http.route=/health"},
        )
        if response.status_code == 200:
            points = [p for p in response.json()["points"] if p["exemplars"]]
            if points:
                break
        time.sleep(0.5)
    assert points, "no http.server.request.duration point with an exemplar for GET /health"
    point = points[-1]
    assert point["attributes"]["http.request.method"] == "GET"
    assert point["attributes"]["http.response.status_code"] == 200
    assert point["count"] >= 1
    trace_id = point["exemplars"][-1]["trace_id"]
    spans = console.trace(trace_id, until=has_spans(("api", "GET /health")))
    assert span_named(spans, "GET /health", "api")["kind"] == "SERVER"


HOSTILE_BODIES = {
    "lone surrogate": (b'{"name": "\\ud800"}', "application/json"),
    "surrogate key": (b'{"name": "ok", "\\udfff": 1}', "application/json"),
    "surrogate echoed": (b'{"name": 5, "extra": "\\ud800"}', "application/json"),
    "deep nesting": (b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
    "deep but parsable": (
        b'{"name": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}",
        "application/json",
    ),
    "huge number": (b'{"name": "n", "description": ' + b"9" * 5000 + b"}", "application/json"),
    "NaN": (b'{"name": NaN}', "application/json"),
    "text/plain": (b'{"name": "plain"}', "text/plain"),
    "form": (b"name=form", "application/x-www-form-urlencoded"),
    "oversized": (b'{"name": "' + b"x" * 2_000_000 + b'"}', "application/json"),
}


def test_hostile_bodies_get_a_4xx_json_answer(api: httpx.Client, gateway: httpx.Client) -> None:
    """Never a 500, never a connection reset, never the hostile input echoed in full."""
    for client in (api, gateway):
        for name, (body, content_type) in HOSTILE_BODIES.items():
            response = client.post("/items", content=body, headers={"content-type": content_type})
            where = f"{name} via {client.base_url}"
            assert 400 <= response.status_code < 500, (where, response.status_code, response.text)
            assert response.headers["content-type"] == "application/json", where
            assert response.json()["detail"], where
            assert len(response.content) < 20_000, (where, len(response.content))
            if name == "oversized":
                assert response.status_code == 413, where
    unicode = api.post("/items", content=HOSTILE_BODIES["lone surrogate"][0],
                       headers={"content-type": "application/json"})  # fmt: skip
    assert unicode.status_code == 422
    (error,) = unicode.json()["detail"]
    assert error["loc"] == ["body", "name"] and error["input"] == "\\ud800"  # escaped
    # The service still works afterwards.
    assert api.post("/items", json={"name": "after the storm"}).status_code == 201
