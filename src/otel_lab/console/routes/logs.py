"""``/api/logs``: log search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from otel_lab.console import queries
from otel_lab.console.routes import schemas
from otel_lab.console.routes.common import (
    Attrs,
    Blank,
    ConsoleJSON,
    Severity,
    Since,
    SpanIdParam,
    StoreDep,
    Text,
    TraceIdParam,
    Until,
    attr_filters,
)

router = APIRouter(tags=["logs"])


@router.get("/api/logs", response_model=schemas.LogsOut)
def logs(
    store: StoreDep,
    service: Text = None,
    severity: Severity = None,
    q: Text = None,
    trace_id: TraceIdParam = None,
    span_id: SpanIdParam = None,
    since: Since = None,
    until: Until = None,
    attr: Attrs = [],  # noqa: B006 - FastAPI copies defaults
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT), Blank] = 100,
) -> ConsoleJSON:
    """Log records, newest first; severity is a minimum (WARN shows WARN and above)."""
    f = queries.LogFilter(
        service=service,
        min_severity=severity,
        text=q,
        trace_id=trace_id,
        span_id=span_id,
        since_ns=since,
        until_ns=until,
        attrs=attr_filters(attr),
        limit=limit,
    )
    return ConsoleJSON({"logs": queries.find_logs(store.reader(), f)})
