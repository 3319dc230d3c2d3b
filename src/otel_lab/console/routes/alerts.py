"""``/api/alerts``: the rules of deploy/prometheus/rules with their state, and where to look."""

from __future__ import annotations

import sqlite3

from fastapi import APIRouter

from otel_lab.console import queries
from otel_lab.console.model import StatusCode
from otel_lab.console.routes.common import ConsoleJSON, PromDep, StoreDep

router = APIRouter(tags=["alerts"])


@router.get("/api/alerts")
def alerts(store: StoreDep, state: PromDep) -> ConsoleJSON:
    """The rules of deploy/prometheus/rules with their state (pending/firing/inactive)."""
    engine = state.engine
    if engine is None:
        return ConsoleJSON({"rules": [], "evaluated_at": None})
    at = engine.evaluated_at_ms
    rules = engine.snapshot()
    conn = store.reader()
    for rule in rules:
        for alert in rule["alerts"]:
            alert["examples"] = _examples(conn, alert["labels"], alert["active_since"])
    return ConsoleJSON(
        {
            "rules": rules,
            "evaluated_at": at / 1000 if at is not None else None,
            "interval_seconds": state.rules.interval if state.rules else None,
            "cpu_seconds": round(state.rules.cpu_seconds, 3) if state.rules else None,
        }
    )


def _examples(
    conn: sqlite3.Connection, labels: dict[str, str], since_s: float
) -> dict[str, str | None] | None:
    """The slowest and a failed trace of the service an alert names, since shortly before
    it became active: where to start looking."""
    service = labels.get("job")
    if not service:
        return None
    since_ns = int((since_s - 300) * 1e9)
    slowest = queries.find_traces(
        conn, queries.TraceFilter(service=service, since_ns=since_ns, limit=1, order="duration")
    )
    failed = queries.find_traces(
        conn,
        queries.TraceFilter(service=service, since_ns=since_ns, limit=1, status=StatusCode.ERROR),
    )
    return {
        "slowest": slowest[0]["trace_id"] if slowest else None,
        "error": failed[0]["trace_id"] if failed else None,
    }
