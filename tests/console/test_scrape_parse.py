"""The scraper's line splitter reads what prometheus_client's own parser reads.

The services expose their metrics with prometheus_client in OpenMetrics (exemplars only exist
there); the console splits those lines itself (about 30x cheaper) and falls back to
prometheus_client's parser for anything unusual. Both must give the same samples.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

from otel_lab.console.scrape import Target, _fast_parse, _library_parse, _parse

TARGET = Target("api", "http://127.0.0.1:8000/metrics")


def exposition(path: str = "/items/{item_id}") -> str:
    registry = CollectorRegistry()
    requests = Counter("requests", "Requests.", ["method", "path", "status"], registry=registry)
    latency = Histogram("request_latency_seconds", "Latency.", ["method", "path"],
                        registry=registry)  # fmt: skip
    depth = Gauge("worker_queue_depth", "Queued.", ["queue"], registry=registry)
    requests.labels("GET", path, "200").inc(3)
    latency.labels("GET", path).observe(0.042, exemplar={"trace_id": "ab" * 16})
    latency.labels("GET", path).observe(7.5)
    depth.labels("celery").set(4)
    Gauge("up_time", "No labels.", registry=registry).set(1.5)
    return generate_latest(registry).decode()


def normalised(samples: list) -> list:
    return [(k, labels, v, e and (e.labels, e.value, e.timestamp)) for k, labels, v, e in samples]


def test_fast_parser_equals_prometheus_client() -> None:
    text = exposition()
    fast, library = normalised(_fast_parse(text, TARGET)), normalised(_library_parse(text, TARGET))
    assert fast == library
    by_name = {(k[0], v) for k, _, v, _ in fast}
    assert ("requests_total", 3.0) in by_name and ("worker_queue_depth", 4.0) in by_name
    exemplars = [e for _, labels, _, e in fast if e]
    assert exemplars and exemplars[0][0] == {"trace_id": "ab" * 16}
    assert all(labels["job"] == "api" and labels["instance"] == "127.0.0.1:8000"
               for _, labels, _, _ in fast)  # fmt: skip


def test_unusual_label_values_fall_back_to_the_library() -> None:
    text = exposition(path='/odd "quoted" {path} # x')
    assert normalised(_parse(text, TARGET)) == normalised(_library_parse(text, TARGET))
    paths = {labels.get("path") for _, labels, _, _ in _parse(text, TARGET)}
    assert '/odd "quoted" {path} # x' in paths
