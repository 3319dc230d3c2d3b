"""The Prometheus-side API: PromQL over the scraped series, exemplars and scrape targets.

``/api/prom/query`` and ``/api/prom/query_range`` answer in Prometheus' JSON shape
(``{"status": "success", "data": {"resultType": ..., "result": [...]}}``), so a script
written against Prometheus reads the console unchanged.
"""

from __future__ import annotations

import math
import time as clock
from typing import Annotated

from fastapi import APIRouter
from pydantic import BeforeValidator, WithJsonSchema

from otel_lab.console import promql, queries
from otel_lab.console.promapi import source
from otel_lab.console.routes.common import ConsoleJSON, PromDep, StoreDep, Text
from otel_lab.console.scrape import StoredExemplar, exemplars

router = APIRouter(prefix="/api/prom", tags=["prometheus"])

# Times are kept as int64 nanoseconds; a range query has at most this many steps (as in
# Prometheus).
MAX_SECONDS = queries.INT64_MAX // 1_000_000_000
MAX_POINTS = 11_000


def parse_seconds(value: str | None) -> float | None:
    """Unix seconds (float) or RFC 3339, as Prometheus accepts."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        ns = queries.parse_time(value, "time")
        return ns / 1e9 if ns is not None else None
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise queries.QueryError(f"time={value[:32]!r}: use unix seconds or RFC 3339")
    return seconds


UnixSeconds = Annotated[
    float | None,
    BeforeValidator(parse_seconds),
    WithJsonSchema({"type": "string", "description": "unix seconds or RFC 3339"}),
]


def _step(value: str | None, span: float) -> float:
    if not value:
        return max(1.0, span / 250)
    try:
        step = float(value)
    except ValueError:
        step = promql.parse_duration_ms(value) / 1000
    if not 0.001 <= step <= 366 * 86400:
        raise promql.PromQLError(f"step={value[:32]!r}: use a duration like 15s, or seconds")
    if span / step > MAX_POINTS:
        raise promql.PromQLError(
            f"exceeded maximum resolution of {MAX_POINTS} points per series: "
            "raise step or shorten the range"
        )
    return step


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if v != int(v) or abs(v) >= 1e15 else str(int(v))


def _bad(exc: promql.PromQLError) -> ConsoleJSON:
    return ConsoleJSON(
        {"status": "error", "errorType": "bad_data", "error": str(exc)}, status_code=400
    )


def _range(start: float | None, end: float | None) -> tuple[float, float]:
    e = end if end is not None else clock.time()
    return (start if start is not None else e - 3600), e


@router.get("/query")
def prom_query(
    store: StoreDep, state: PromDep, query: str = "", time: UnixSeconds = None
) -> ConsoleJSON:
    """One PromQL instant query (the console's subset; see docs/console-dashboards.md)."""
    t = time if time is not None else clock.time()
    try:
        value = promql.Evaluator(source(store, state)).instant(promql.parse(query), int(t * 1000))
    except promql.PromQLError as exc:
        return _bad(exc)
    if isinstance(value, float):
        data = {"resultType": "scalar", "result": [t, _fmt(value)]}
    else:
        data = {
            "resultType": "vector",
            "result": [{"metric": dict(lb), "value": [t, _fmt(v)]} for lb, v in value],
        }
    return ConsoleJSON({"status": "success", "data": data})


@router.get("/query_range")
def prom_query_range(
    store: StoreDep,
    state: PromDep,
    query: str = "",
    start: UnixSeconds = None,
    end: UnixSeconds = None,
    step: Text = None,
) -> ConsoleJSON:
    s, e = _range(start, end)
    try:
        st = _step(step, e - s)
        result = promql.Evaluator(source(store, state)).range(
            promql.parse(query), int(s * 1000), int(e * 1000), int(st * 1000)
        )
    except promql.PromQLError as exc:
        return _bad(exc)
    data = {
        "resultType": "matrix",
        "result": [
            {"metric": dict(lb), "values": [[t / 1000, _fmt(v)] for t, v in points]}
            for lb, points in sorted(result.items())
        ],
    }
    return ConsoleJSON({"status": "success", "data": data})


@router.get("/exemplars")
def prom_exemplars(
    store: StoreDep, query: str = "", start: UnixSeconds = None, end: UnixSeconds = None
) -> ConsoleJSON:
    """Exemplars (trace ids) of the series the query's selectors match."""
    s, e = _range(start, end)
    try:
        tree = promql.parse(query)
    except promql.PromQLError as exc:
        return _bad(exc)
    found: list[StoredExemplar] = []
    for sel in promql.selectors(tree):
        found += exemplars(store.reader(), sel.matchers, int(s * 1e9), int(e * 1e9))
    return ConsoleJSON({"status": "success", "data": found})


@router.get("/targets")
def prom_targets(state: PromDep) -> ConsoleJSON:
    scraper = state.scraper
    if scraper is None:
        return ConsoleJSON({"targets": [], "interval_seconds": None})
    return ConsoleJSON(
        {
            "interval_seconds": scraper.interval,
            "scrapes": scraper.scrapes,
            "cpu_seconds": round(scraper.cpu_seconds, 3),
            "derive_cpu_seconds": round(scraper.derive_cpu_seconds, 3),
            "targets": [vars(t) for t in scraper.states.values()],
        }
    )
