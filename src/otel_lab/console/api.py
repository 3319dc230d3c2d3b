"""The console's JSON API (and, later, its HTML pages) on the UI port.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, each thread
with its own read-only SQLite connection, so a slow query never stalls the event loop
that also serves the OTLP receiver.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from otel_lab.console import queries
from otel_lab.console.otlp import dumps
from otel_lab.console.queries import QueryError
from otel_lab.console.store import Store

log = logging.getLogger("otel_lab.console.api")


class ConsoleJSON(JSONResponse):
    """Compact JSON that tolerates NaN/Infinity in stored data instead of failing."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


def _error(status: int, detail: str) -> ConsoleJSON:
    return ConsoleJSON({"detail": detail}, status_code=status)


def _attrs(values: list[str] | None) -> list[queries.AttrFilter]:
    return [queries.parse_attr(v) for v in values or []]


def create_app(store: Store, *, otlp_url: str | None = None) -> FastAPI:
    """The UI-port app. Swagger's /docs is off: it loads assets from a CDN (offline here)."""
    app = FastAPI(
        title="Otel Lab console",
        description="Traces, logs and metrics received over OTLP/HTTP.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        default_response_class=ConsoleJSON,
    )
    app.state.store = store
    app.state.otlp_url = otlp_url

    @app.exception_handler(QueryError)
    async def _bad_query(_: Request, exc: QueryError) -> ConsoleJSON:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> ConsoleJSON:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return _error(400, problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> ConsoleJSON:
        return ConsoleJSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ConsoleJSON:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal error; see the console's log")

    @app.get("/api/health")
    def health() -> ConsoleJSON:
        """Readiness: the store is open and answers a query."""
        if not store.healthy:
            return ConsoleJSON({"status": "unavailable"}, status_code=503)
        store.reader().execute("SELECT 1").fetchone()
        return ConsoleJSON({"status": "ok"})

    @app.get("/api/stats")
    def stats() -> ConsoleJSON:
        """Ingest counters, for benchmarks and for seeing whether data is being dropped."""
        s = store.stats
        return ConsoleJSON(
            {
                "stored": queries.counts(store.reader()),
                "written": {
                    "spans": s.spans_written,
                    "logs": s.logs_written,
                    "metric_points": s.points_written,
                },
                "duplicate_spans": s.duplicate_spans,
                "pending_rows": store.pending_rows,
                "max_pending_rows": store.max_pending_rows,
                "rows_refused": s.rows_refused,
                "write_errors": s.write_errors,
                "transactions": s.transactions,
                "last_commit_ms": round(s.last_commit_ms, 3),
                "db_path": str(store.path),
                "otlp_url": otlp_url,
            }
        )

    @app.get("/api/services")
    def services() -> ConsoleJSON:
        return ConsoleJSON({"services": queries.list_services(store.reader())})

    @app.get("/api/services/{service}/operations")
    def operations(service: str) -> ConsoleJSON:
        return ConsoleJSON({"operations": queries.list_operations(store.reader(), service)})

    @app.get("/api/traces")
    def traces(
        service: str | None = None,
        name: str | None = None,
        status: str | None = None,
        min_duration_ms: str | None = None,
        max_duration_ms: str | None = None,
        since: str | None = None,
        until: str | None = None,
        attr: Annotated[list[str] | None, Query()] = None,
        limit: str | None = None,
        order: str | None = None,
    ) -> ConsoleJSON:
        """Trace summaries, newest (or slowest) first; see docs/console.md for semantics."""
        if order not in (None, "", "start", "duration"):
            raise QueryError(f"order={order[:64]!r}: use start or duration")
        f = queries.TraceFilter(
            service=service or None,
            name=name or None,
            status=queries.parse_status(status),
            min_duration_ns=queries.parse_duration_ms(min_duration_ms, "min_duration_ms"),
            max_duration_ns=queries.parse_duration_ms(max_duration_ms, "max_duration_ms"),
            since_ns=queries.parse_time(since, "since"),
            until_ns=queries.parse_time(until, "until"),
            attrs=_attrs(attr),
            limit=queries.parse_limit(limit, 20),
            order=order or "start",
        )
        return ConsoleJSON({"traces": queries.find_traces(store.reader(), f)})

    @app.get("/api/traces/{trace_id}")
    def trace(trace_id: str) -> ConsoleJSON:
        tid = queries.parse_trace_id(trace_id)
        spans = queries.get_trace(store.reader(), tid)
        if not spans:
            return _error(404, f"trace {trace_id} not found")
        return ConsoleJSON({"trace_id": tid.hex(), "spans": spans})

    @app.get("/api/traces/{trace_id}/logs")
    def trace_logs(trace_id: str, limit: str | None = None) -> ConsoleJSON:
        tid = queries.parse_trace_id(trace_id)
        f = queries.LogFilter(
            trace_id=tid, limit=queries.parse_limit(limit, 1000, 10_000), oldest_first=True
        )
        return ConsoleJSON({"logs": queries.find_logs(store.reader(), f)})

    @app.get("/api/logs")
    def logs(
        service: str | None = None,
        severity: str | None = None,
        q: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        attr: Annotated[list[str] | None, Query()] = None,
        limit: str | None = None,
    ) -> ConsoleJSON:
        """Log records, newest first; severity is a minimum (WARN shows WARN and above)."""
        f = queries.LogFilter(
            service=service or None,
            min_severity=queries.parse_severity(severity),
            text=q or None,
            trace_id=queries.parse_trace_id(trace_id) if trace_id else None,
            span_id=queries.parse_span_id(span_id) if span_id else None,
            since_ns=queries.parse_time(since, "since"),
            until_ns=queries.parse_time(until, "until"),
            attrs=_attrs(attr),
            limit=queries.parse_limit(limit, 100),
        )
        return ConsoleJSON({"logs": queries.find_logs(store.reader(), f)})

    @app.get("/api/metrics")
    def metrics() -> ConsoleJSON:
        return ConsoleJSON({"metrics": queries.list_metrics(store.reader())})

    @app.get("/api/metrics/{name:path}")
    def metric(
        name: str,
        service: str | None = None,
        since: str | None = None,
        until: str | None = None,
        attr: Annotated[list[str] | None, Query()] = None,
        limit: str | None = None,
    ) -> ConsoleJSON:
        """The metric's most recent points (oldest first), with exemplars."""
        f = queries.PointFilter(
            service=service or None,
            since_ns=queries.parse_time(since, "since"),
            until_ns=queries.parse_time(until, "until"),
            attrs=_attrs(attr),
            limit=queries.parse_limit(limit, 1000, 10_000),
        )
        result = queries.metric_points(store.reader(), name, f)
        if result is None:
            return _error(404, f"metric {name} not found")
        return ConsoleJSON(result)

    return app
