"""The console's JSON API and HTML pages on the UI port.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, each thread
with its own read-only SQLite connection, so a slow query never stalls the event loop
that also serves the OTLP receiver. Every page of the UI is built from these endpoints,
so anything the UI shows can also be fetched as JSON.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from otel_lab.console import analytics, queries, sqlconsole, transfer
from otel_lab.console.otlp import Batch, BodyTooLarge, DecodeError, decompress, dumps
from otel_lab.console.queries import QueryError
from otel_lab.console.security import Security, UiGuard
from otel_lab.console.store import MINUTE_NS, Store

log = logging.getLogger("otel_lab.console.api")

MAX_IMPORT_BYTES = 64 * 1024 * 1024
SIGNALS = ("traces", "logs", "metrics")


class ConsoleJSON(JSONResponse):
    """Compact JSON that tolerates NaN/Infinity in stored data instead of failing."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


@dataclass(frozen=True)
class ApiOptions:
    """Settings the UI port needs besides the store."""

    otlp_url: str | None = None
    security: Security = field(default_factory=Security)
    sql_timeout: float = sqlconsole.DEFAULT_TIMEOUT_SECONDS
    sql_max_rows: int = sqlconsole.DEFAULT_MAX_ROWS
    prom: Any = None  # promapi.PromState: the scraper and the alert rules, when running


def _error(status: int, detail: str) -> ConsoleJSON:
    return ConsoleJSON({"detail": detail}, status_code=status)


def _attrs(values: list[str] | None) -> list[queries.AttrFilter]:
    return [queries.parse_attr(v) for v in values or []]


def _signal(value: str | None, default: str = "spans") -> str:
    signal = value or default
    if signal not in ("spans", "logs", "metrics"):
        raise QueryError(f"signal={signal[:64]!r}: use spans, logs or metrics")
    return signal


def oldest_ns(conn: Any, table: str) -> int | None:
    column = {"traces": "start_ns", "logs": "time_ns", "metric_points": "time_ns"}[table]
    return conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]


def _window(
    conn: Any,
    since: str | None,
    until: str | None,
    window: str | None,
    oldest: Any,
    default_seconds: float = 3600,
) -> analytics.Window:
    """since/until (ns or ISO), or window=15m|1h|...|all (up to now)."""
    since_ns = queries.parse_time(since, "since")
    until_ns = queries.parse_time(until, "until")
    if window and since_ns is None:
        end = until_ns if until_ns is not None else time.time_ns()
        if window == "all":
            first = oldest()
            return analytics.Window(min(first, end) if first is not None else end - MINUTE_NS, end)
        seconds = queries.parse_duration_seconds(window, "window")
        return analytics.Window(end - int(seconds * 1e9), end)
    return analytics.window(since_ns, until_ns, default_seconds)


def _split(batch: Batch, max_rows: int) -> Iterator[Batch]:
    """A batch in pieces of at most max_rows rows (an import may exceed the write queue)."""
    if batch.rows <= max_rows:
        yield batch
        return
    for name in ("spans", "logs", "points"):
        rows = getattr(batch, name)
        for i in range(0, len(rows), max_rows):
            piece = Batch(
                resources=batch.resources,
                scopes=batch.scopes,
                metrics=batch.metrics,
                metric_services=batch.metric_services,
            )
            setattr(piece, name, rows[i : i + max_rows])
            yield piece


def create_app(
    store: Store, *, otlp_url: str | None = None, options: ApiOptions | None = None
) -> Any:
    """The UI-port app (wrapped in UiGuard). Swagger's /docs is off: it loads assets from a
    CDN, which is unreachable offline; the schema is at /api/openapi.json."""
    options = options or ApiOptions(otlp_url=otlp_url)
    otlp_url = options.otlp_url or otlp_url
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
    app.state.options = options

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

    # ------------------------------------------------------------------ status

    @app.get("/api/health")
    def health() -> ConsoleJSON:
        """Readiness: the store is open and answers a query."""
        if not store.healthy:
            return ConsoleJSON({"status": "unavailable"}, status_code=503)
        store.reader().execute("SELECT 1").fetchone()
        return ConsoleJSON({"status": "ok"})

    @app.get("/api/stats")
    def stats() -> ConsoleJSON:
        """Ingest counters, storage use, retention settings and what eviction removed."""
        s = store.stats
        conn = store.reader()
        disk = store.disk_bytes()
        oldest = (oldest_ns(conn, t) for t in ("traces", "logs", "metric_points"))
        present = [v for v in oldest if v is not None]
        return ConsoleJSON(
            {
                "stored": queries.counts(conn),
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
                "disk": {
                    "db_bytes": disk["db"],
                    "wal_bytes": disk["wal"],
                    "used_bytes": store.used_bytes(conn),
                },
                "retention_seconds": store.retention_ns / 1e9 if store.retention_ns else None,
                "max_db_bytes": store.max_db_bytes,
                "oldest_unix_nano": min(present) if present else None,
                "evicted": store.evictions.as_dict(),
                "token_required": options.security.token is not None,
            }
        )

    # ------------------------------------------------------------------ catalogues

    @app.get("/api/services")
    def services() -> ConsoleJSON:
        return ConsoleJSON({"services": queries.list_services(store.reader())})

    @app.get("/api/services/{service}/operations")
    def operations(service: str) -> ConsoleJSON:
        return ConsoleJSON({"operations": queries.list_operations(store.reader(), service)})

    @app.get("/api/attributes")
    def attributes(
        signal: str | None = None, service: str | None = None, key: str | None = None
    ) -> ConsoleJSON:
        """Attribute keys seen recently (``key`` absent) or that key's frequent values."""
        sig = _signal(signal)
        conn = store.reader()
        if key:
            if '"' in key or "\\" in key:
                raise QueryError("key must not contain quotes or backslashes")
            values = analytics.attribute_values(conn, sig, key, service or None)
            return ConsoleJSON({"key": key, "values": values})
        return ConsoleJSON({"keys": analytics.attribute_keys(conn, sig, service or None)})

    # ------------------------------------------------------------------ traces

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

    @app.get("/api/traces/{trace_id}/waterfall")
    def waterfall(trace_id: str) -> ConsoleJSON:
        """Compact rows in tree order for the waterfall (attributes: see the span endpoint)."""
        tid = queries.parse_trace_id(trace_id)
        result = queries.trace_waterfall(store.reader(), tid)
        if result is None:
            return _error(404, f"trace {trace_id} not found")
        return ConsoleJSON(result)

    @app.get("/api/traces/{trace_id}/spans/{span_id}")
    def span(trace_id: str, span_id: str, logs_limit: str | None = None) -> ConsoleJSON:
        """One span with attributes, resource, events, links and its logs."""
        tid, sid = queries.parse_trace_id(trace_id), queries.parse_span_id(span_id)
        conn = store.reader()
        result = queries.get_span(conn, tid, sid)
        if result is None:
            return _error(404, f"span {span_id} not found in trace {trace_id}")
        f = queries.LogFilter(
            trace_id=tid,
            span_id=sid,
            limit=queries.parse_limit(logs_limit, 200, 10_000),
            oldest_first=True,
        )
        result["logs"] = queries.find_logs(conn, f)
        return ConsoleJSON(result)

    @app.get("/api/traces/{trace_id}/logs")
    def trace_logs(trace_id: str, limit: str | None = None) -> ConsoleJSON:
        tid = queries.parse_trace_id(trace_id)
        f = queries.LogFilter(
            trace_id=tid, limit=queries.parse_limit(limit, 1000, 10_000), oldest_first=True
        )
        return ConsoleJSON({"logs": queries.find_logs(store.reader(), f)})

    # ------------------------------------------------------------------ logs

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

    # ------------------------------------------------------------------ derived views

    @app.get("/api/service-map")
    def service_map(
        since: str | None = None,
        until: str | None = None,
        window: str | None = None,
        max_traces: str | None = None,
    ) -> ConsoleJSON:
        """Services and databases with calls, rate, error rate and latency per edge."""
        conn = store.reader()
        w = _window(conn, since, until, window, lambda: oldest_ns(conn, "traces"))
        cap = queries.parse_limit(max_traces, 5000, 100_000)
        return ConsoleJSON(analytics.service_map(conn, w, cap))

    @app.get("/api/red")
    def red(
        since: str | None = None,
        until: str | None = None,
        window: str | None = None,
        service: str | None = None,
        route: str | None = None,
        buckets: str | None = None,
    ) -> ConsoleJSON:
        """Rate, error rate and p50/p95/p99 per service (or per route of one service)."""
        conn = store.reader()

        def first() -> int | None:
            minute = conn.execute("SELECT min(minute) FROM red").fetchone()[0]
            return minute * MINUTE_NS if minute is not None else None

        w = _window(conn, since, until, window, first)
        n = queries.parse_limit(buckets, 60, 500)
        if route and not service:
            raise QueryError("route needs service")
        return ConsoleJSON(analytics.red(conn, w, service or None, route or None, n))

    @app.get("/api/metrics")
    def metrics() -> ConsoleJSON:
        return ConsoleJSON({"metrics": queries.list_metrics(store.reader())})

    @app.get("/api/metric-series")
    def metric_series(
        name: str,
        service: str | None = None,
        since: str | None = None,
        until: str | None = None,
        window: str | None = None,
        attr: Annotated[list[str] | None, Query()] = None,
        group_by: Annotated[list[str] | None, Query()] = None,
        buckets: str | None = None,
    ) -> ConsoleJSON:
        """A metric as derived time series (rates, values, percentiles) with exemplars."""
        conn = store.reader()
        w = _window(conn, since, until, window, lambda: oldest_ns(conn, "metric_points"))
        result = analytics.metric_series(
            conn,
            name,
            w,
            service=service or None,
            attrs=_attrs(attr),
            group_by=[g for g in group_by or [] if g],
            buckets=queries.parse_limit(buckets, 60, 500),
        )
        if result is None:
            return _error(404, f"metric {name} not found")
        return ConsoleJSON(result)

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

    # ------------------------------------------------------------------ SQL

    def _sql(sql: str, limit: str | None) -> ConsoleJSON:
        max_rows = queries.parse_limit(limit, options.sql_max_rows, sqlconsole.MAX_ROWS_LIMIT)
        try:
            result = sqlconsole.run_sql(
                store.path, sql, max_rows=max_rows, timeout=options.sql_timeout
            )
        except sqlconsole.SqlError as exc:
            return _error(400, str(exc))
        return ConsoleJSON(result)

    @app.get("/api/sql")
    def sql_get(q: str = "", limit: str | None = None) -> ConsoleJSON:
        """Run one read-only statement (time-limited, row-capped); BLOBs come back as hex."""
        return _sql(q, limit)

    @app.post("/api/sql")
    def sql_post(body: dict[str, Any]) -> ConsoleJSON:
        sql = body.get("sql")
        if not isinstance(sql, str):
            raise QueryError('body must be {"sql": "SELECT ...", "limit": 1000}')
        limit = body.get("limit")
        return _sql(sql, str(limit) if limit is not None else None)

    @app.get("/api/sql/schema")
    def sql_schema() -> ConsoleJSON:
        return ConsoleJSON(
            {
                "tables": sqlconsole.schema(store.path),
                "examples": [{"title": t, "sql": s} for t, s in sqlconsole.EXAMPLES],
                "timeout_seconds": options.sql_timeout,
                "max_rows": options.sql_max_rows,
            }
        )

    # ------------------------------------------------------------------ data management

    @app.get("/api/export", response_model=None)
    def export(
        trace_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        signals: str | None = None,
    ) -> StreamingResponse | ConsoleJSON:
        """OTLP JSON Lines: one trace (with its logs), or everything in a time range."""
        chosen = tuple(s.strip() for s in (signals or ",".join(SIGNALS)).split(",") if s.strip())
        unknown = [s for s in chosen if s not in SIGNALS]
        if unknown or not chosen:
            raise QueryError(f"signals: use a comma-separated subset of {', '.join(SIGNALS)}")
        if trace_id:
            tid = queries.parse_trace_id(trace_id)
            if (
                store.reader().execute("SELECT 1 FROM traces WHERE trace_id = ?", (tid,)).fetchone()
                is None
            ):
                return _error(404, f"trace {trace_id} not found")
            filename = f"trace-{tid.hex()}.jsonl"

            def produce(conn: Any) -> Iterator[str]:
                return transfer.export_trace(conn, tid)

        else:
            since_ns = queries.parse_time(since, "since") or 0
            until_ns = queries.parse_time(until, "until") or queries.INT64_MAX
            filename = "otel-lab-export.jsonl"

            def produce(conn: Any) -> Iterator[str]:
                return transfer.export_range(conn, since_ns, until_ns, chosen)

        def lines() -> Iterator[bytes]:
            conn = store.open_reader()
            try:
                for line in produce(conn):
                    yield line.encode()
            finally:
                conn.close()

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    @app.post("/api/import")
    async def import_(request: Request) -> ConsoleJSON:
        """OTLP JSON (one document or JSON Lines, gzip allowed), as exported or as sent
        to /v1/*; rows go through the same writer queue as ingest."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMPORT_BYTES:
                return _error(413, f"file larger than {MAX_IMPORT_BYTES} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            return _error(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none")
        if body[:2] == b"\x1f\x8b" and encoding in ("", "identity"):
            encoding = "gzip"  # a .jsonl.gz file uploaded as it is
        try:
            return await run_in_threadpool(_import, decompress(body, encoding))
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        except (DecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"not OTLP JSON: {exc}")

    def _import(body: bytes) -> ConsoleJSON:
        parsed = transfer.parse_import(body)
        counts = {"spans": 0, "logs": 0, "metric_points": 0, "rejected": 0}
        problems: list[str] = []
        oldest: int | None = None
        for _signal_name, batch in parsed:
            counts["spans"] += len(batch.spans)
            counts["logs"] += len(batch.logs)
            counts["metric_points"] += len(batch.points)
            counts["rejected"] += batch.rejected
            problems += [p for p in batch.problems if p not in problems]
            times = [s[6] for s in batch.spans] + [r[0] for r in batch.logs]
            times += [p[4] for p in batch.points]
            if times:
                oldest = min(times) if oldest is None else min(oldest, min(times))
            for piece in _split(batch, max(1, store.max_pending_rows // 2)):
                deadline = time.monotonic() + 60
                while not store.submit(piece):
                    if time.monotonic() > deadline:
                        return _error(503, "the write queue stayed full; try again")
                    time.sleep(0.05)
        store.flush(timeout=60)
        result: dict[str, Any] = {"imported": counts, "problems": problems[:5]}
        if (
            oldest is not None
            and store.retention_ns
            and oldest < time.time_ns() - store.retention_ns
        ):
            result["warning"] = (
                "some imported data is older than the retention "
                f"({store.retention_ns / 3.6e12:g}h) and will be evicted; restart the console "
                "with a longer --retention to keep it"
            )
        return ConsoleJSON(result)

    @app.post("/api/clear")
    def clear(confirm: str | None = None) -> ConsoleJSON:
        """Delete all stored telemetry. Needs ``?confirm=yes`` so it is never an accident."""
        if confirm != "yes":
            raise QueryError("clearing deletes all telemetry: repeat with ?confirm=yes")
        return ConsoleJSON({"cleared": store.clear()})

    from otel_lab.console.promapi import PromState, add_prom_routes
    from otel_lab.console.scenarios import add_scenario_routes
    from otel_lab.console.web import add_pages

    add_prom_routes(app, store, options.prom or PromState())
    add_scenario_routes(app)

    add_pages(app, store, options)
    return UiGuard(app, options.security)
