"""``/api/traces``: trace search, one trace, its waterfall, one span and a trace's logs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from otel_lab.console import queries
from otel_lab.console.routes import schemas
from otel_lab.console.routes.common import (
    Attrs,
    Blank,
    ConsoleJSON,
    Milliseconds,
    Since,
    SpanId,
    Status,
    StoreDep,
    Text,
    TraceId,
    Until,
    attr_filters,
    error,
    ms_to_ns,
)

router = APIRouter(prefix="/api/traces", tags=["traces"])


@router.get("", response_model=schemas.TracesOut)
def traces(
    store: StoreDep,
    service: Text = None,
    name: Text = None,
    status: Status = None,
    min_duration_ms: Milliseconds = None,
    max_duration_ms: Milliseconds = None,
    since: Since = None,
    until: Until = None,
    attr: Attrs = [],  # noqa: B006 - FastAPI copies defaults
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT), Blank] = 20,
    order: Annotated[Literal["start", "duration"], Blank] = "start",
) -> ConsoleJSON:
    """Trace summaries, newest (or slowest) first; see docs/console.md for semantics."""
    f = queries.TraceFilter(
        service=service,
        name=name,
        status=queries.STATUS_BY_NAME[status] if status else None,
        min_duration_ns=ms_to_ns(min_duration_ms),
        max_duration_ns=ms_to_ns(max_duration_ms),
        since_ns=since,
        until_ns=until,
        attrs=attr_filters(attr),
        limit=limit,
        order=order,
    )
    return ConsoleJSON({"traces": queries.find_traces(store.reader(), f)})


@router.get("/{trace_id}", response_model=schemas.TraceOut)
def trace(store: StoreDep, trace_id: TraceId) -> ConsoleJSON:
    spans = queries.get_trace(store.reader(), trace_id)
    if not spans:
        return error(404, f"trace {trace_id.hex()} not found")
    return ConsoleJSON({"trace_id": trace_id.hex(), "spans": spans})


@router.get("/{trace_id}/waterfall", response_model=schemas.WaterfallOut)
def waterfall(store: StoreDep, trace_id: TraceId) -> ConsoleJSON:
    """Compact rows in tree order for the waterfall (attributes: see the span endpoint)."""
    result = queries.trace_waterfall(store.reader(), trace_id)
    if result is None:
        return error(404, f"trace {trace_id.hex()} not found")
    return ConsoleJSON(result)


@router.get("/{trace_id}/spans/{span_id}", response_model=schemas.SpanOut)
def span(
    store: StoreDep,
    trace_id: TraceId,
    span_id: SpanId,
    logs_limit: Annotated[int, Query(ge=1, le=10_000), Blank] = 200,
) -> ConsoleJSON:
    """One span with attributes, resource, events, links and its logs."""
    conn = store.reader()
    result = queries.get_span(conn, trace_id, span_id)
    if result is None:
        return error(404, f"span {span_id.hex()} not found in trace {trace_id.hex()}")
    f = queries.LogFilter(trace_id=trace_id, span_id=span_id, limit=logs_limit, oldest_first=True)
    result["logs"] = queries.find_logs(conn, f)
    return ConsoleJSON(result)


@router.get("/{trace_id}/logs", response_model=schemas.LogsOut)
def trace_logs(
    store: StoreDep,
    trace_id: TraceId,
    limit: Annotated[int, Query(ge=1, le=10_000), Blank] = 1000,
) -> ConsoleJSON:
    f = queries.LogFilter(trace_id=trace_id, limit=limit, oldest_first=True)
    return ConsoleJSON({"logs": queries.find_logs(store.reader(), f)})
