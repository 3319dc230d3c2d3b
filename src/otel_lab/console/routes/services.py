"""Services: the catalogue, their operations and attributes, the service map and RED."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from otel_lab.console import analytics, queries
from otel_lab.console.queries import QueryError
from otel_lab.console.routes import schemas
from otel_lab.console.routes.common import (
    Blank,
    ConsoleJSON,
    Signal,
    Since,
    StoreDep,
    Text,
    Until,
    Window,
    oldest_ns,
    time_window,
)
from otel_lab.console.store import MINUTE_NS

router = APIRouter(tags=["services"])


@router.get("/api/services", response_model=schemas.ServicesOut)
def services(store: StoreDep) -> ConsoleJSON:
    return ConsoleJSON({"services": queries.list_services(store.reader())})


@router.get("/api/services/{service}/operations", response_model=schemas.OperationsOut)
def operations(store: StoreDep, service: str) -> ConsoleJSON:
    return ConsoleJSON({"operations": queries.list_operations(store.reader(), service)})


@router.get("/api/attributes", response_model=schemas.AttributeKeysOut | schemas.AttributeValuesOut)
def attributes(
    store: StoreDep, signal: Signal = "spans", service: Text = None, key: Text = None
) -> ConsoleJSON:
    """Attribute keys seen recently (``key`` absent) or that key's frequent values."""
    conn = store.reader()
    if key:
        values = analytics.attribute_values(conn, signal, queries.check_attr_key(key), service)
        return ConsoleJSON({"key": key, "values": values})
    return ConsoleJSON({"keys": analytics.attribute_keys(conn, signal, service)})


@router.get("/api/service-map", response_model=schemas.ServiceMapOut)
def service_map(
    store: StoreDep,
    since: Since = None,
    until: Until = None,
    window: Window = None,
    max_traces: Annotated[int, Query(ge=1, le=100_000), Blank] = 5000,
) -> ConsoleJSON:
    """Services and databases with calls, rate, error rate and latency per edge."""
    conn = store.reader()
    w = time_window(since, until, window, lambda: oldest_ns(conn, "traces"))
    return ConsoleJSON(analytics.service_map(conn, w, max_traces))


@router.get("/api/red", response_model=schemas.RedOut)
def red(
    store: StoreDep,
    since: Since = None,
    until: Until = None,
    window: Window = None,
    service: Text = None,
    route: Text = None,
    buckets: Annotated[int, Query(ge=1, le=500), Blank] = 60,
) -> ConsoleJSON:
    """Rate, error rate and p50/p95/p99 per service (or per route of one service)."""
    conn = store.reader()

    def first() -> int | None:
        (minute,) = conn.execute("SELECT min(minute) FROM red").fetchone()
        return minute * MINUTE_NS if minute is not None else None

    w = time_window(since, until, window, first)
    if route and not service:
        raise QueryError("route needs service")
    return ConsoleJSON(analytics.red(conn, w, service, route, buckets))
