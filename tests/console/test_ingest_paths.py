"""The ingest path's shortcuts give the same rows as the general code they stand in for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from otel_lab.console.model import SpanKind, SpanRow
from otel_lab.console.otlp import access_log_body, dumps
from otel_lab.console.store.summaries import RedRoutes, route_of


def _general(attrs: dict[str, Any], elapsed_ms: float) -> str:
    fields = {
        "method": attrs.get("http.request.method_original") or attrs.get("http.request.method"),
        "path": attrs.get("http.route") or attrs.get("url.path"),
        "status_code": attrs.get("http.response.status_code"),
        "elapsed_ms": elapsed_ms,
        "request_id": attrs.get("request.id"),
        "derived_from": "server span",
    }
    return dumps({k: v for k, v in fields.items() if v is not None})


@pytest.mark.parametrize(
    "attrs",
    [
        {"http.request.method": "GET", "http.route": "/health", "url.path": "/health",
         "http.response.status_code": 200, "request.id": "17e0c4aac6de2cd7d1edf4578e4965c9"},
        {"http.request.method": "_OTHER", "http.request.method_original": "PURGE",
         "url.path": "/x", "http.response.status_code": 404, "request.id": "a"},
        {"http.request.method": "GET", "http.route": '/q/"{id}"\\ünï\n',
         "http.response.status_code": 500, "request.id": 'x"y\\z\u2028'},
        {"http.request.method": "GET", "http.route": "/no-id", "http.response.status_code": 200},
        {"http.request.method": "GET", "http.route": "/str-status",
         "http.response.status_code": "200", "request.id": "r"},
        {"http.request.method": "POST", "http.response.status_code": True, "request.id": "r"},
        {},
    ],
)  # fmt: skip
@pytest.mark.parametrize("elapsed_ms", [0.0, 0.12, 12.5, 1234567.89])
def test_access_line_fast_path_matches_the_general_encoding(
    attrs: dict[str, Any], elapsed_ms: float
) -> None:
    first = access_log_body(attrs, elapsed_ms)
    assert first == _general(attrs, elapsed_ms)
    assert access_log_body(attrs, elapsed_ms) == first  # the cached prefix, second time
    json.loads(first)


def _span(name: str, attrs: dict[str, Any] | None, n: int, kind: int = SpanKind.SERVER) -> SpanRow:
    return SpanRow(
        n.to_bytes(16, "big"), n.to_bytes(8, "big"), None, name, kind, "svc",
        60_000_000_000 * (n % 2), 60_000_000_000 * (n % 2) + 1000 * n, 1000 * n, 0, None,
        dumps(attrs) if attrs else None, None, None, 1, 1,
    )  # fmt: skip


def test_red_rows_from_decoded_attributes_match_those_from_the_json() -> None:
    attributes: list[dict[str, Any] | None] = [
        {"http.route": "/items/{id}", "http.request.method": "GET"},
        {"http.route": "/items/{id}", "http.method": "POST"},
        {"http.route": "/health"},
        {"http.route": ""},
        {"http.route": 7, "http.request.method": "GET"},
        {"url.path": "/raw"},
        None,
    ]
    spans = [_span(f"op{i % 3}", a, i + 1) for i, a in enumerate(attributes * 3)]
    spans.append(_span("client", {"http.route": "/x"}, 99, kind=SpanKind.CLIENT))
    decoded = {(s.trace_id, s.span_id): json.loads(s.attributes) for s in spans if s.attributes}
    for s in spans:
        assert route_of(s, decoded.get((s.trace_id, s.span_id))) == route_of(s)

    class NoRoutesYet:
        def execute(self, *_: Any) -> list[tuple[str]]:
            return []

    db: Any = NoRoutesYet()
    assert RedRoutes().rows(db, spans, decoded) == RedRoutes().rows(db, spans)
