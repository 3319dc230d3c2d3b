"""``/api/metrics``: the metric catalogue, a metric's points and its derived series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from otel_lab.console import analytics, queries
from otel_lab.console.routes import schemas
from otel_lab.console.routes.common import (
    Attrs,
    Blank,
    ConsoleJSON,
    GroupBy,
    Since,
    StoreDep,
    Text,
    Until,
    Window,
    attr_filters,
    error,
    oldest_ns,
    time_window,
)

router = APIRouter(tags=["metrics"])


@router.get("/api/metrics", response_model=schemas.MetricsOut)
def metrics(store: StoreDep) -> ConsoleJSON:
    return ConsoleJSON({"metrics": queries.list_metrics(store.reader())})


@router.get("/api/metric-series", response_model=schemas.MetricSeriesOut)
def metric_series(
    store: StoreDep,
    name: str,
    service: Text = None,
    since: Since = None,
    until: Until = None,
    window: Window = None,
    attr: Attrs = [],  # noqa: B006 - FastAPI copies defaults
    group_by: GroupBy = [],  # noqa: B006
    buckets: Annotated[int, Query(ge=1, le=500), Blank] = 60,
) -> ConsoleJSON:
    """A metric as derived time series (rates, values, percentiles) with exemplars."""
    conn = store.reader()
    w = time_window(since, until, window, lambda: oldest_ns(conn, "metric_points"))
    result = analytics.metric_series(
        conn,
        name,
        w,
        service=service,
        attrs=attr_filters(attr),
        group_by=[g for g in group_by if g],
        buckets=buckets,
    )
    if result is None:
        return error(404, f"metric {name} not found")
    return ConsoleJSON(result)


@router.get("/api/metrics/{name:path}", response_model=schemas.MetricPointsOut)
def metric(
    store: StoreDep,
    name: str,
    service: Text = None,
    since: Since = None,
    until: Until = None,
    attr: Attrs = [],  # noqa: B006 - FastAPI copies defaults
    limit: Annotated[int, Query(ge=1, le=10_000), Blank] = 1000,
) -> ConsoleJSON:
    """The metric's most recent points (oldest first), with exemplars."""
    f = queries.PointFilter(
        service=service, since_ns=since, until_ns=until, attrs=attr_filters(attr), limit=limit
    )
    result = queries.metric_points(store.reader(), name, f)
    if result is None:
        return error(404, f"metric {name} not found")
    return ConsoleJSON(result)
