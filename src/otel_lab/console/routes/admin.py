"""The store itself: health, statistics, export and import (OTLP JSON Lines), clearing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from otel_lab.console import queries, transfer
from otel_lab.console.otlp import Batch, BodyTooLarge, DecodeError, decompress
from otel_lab.console.queries import QueryError
from otel_lab.console.routes.common import (
    Blank,
    ConsoleJSON,
    OptionsDep,
    Since,
    StoreDep,
    TraceIdParam,
    Until,
    error,
    oldest_ns,
)
from otel_lab.console.store import Store
from otel_lab.jsontypes import JSONObject

router = APIRouter(prefix="/api", tags=["store"])

MAX_IMPORT_BYTES = 64 * 1024 * 1024
SIGNALS = ("traces", "logs", "metrics")


def _signals(value: str | None) -> tuple[str, ...]:
    """``traces,logs``: a comma-separated subset of SIGNALS (all when absent)."""
    chosen = tuple(s.strip() for s in (value or ",".join(SIGNALS)).split(",") if s.strip())
    if not chosen or any(s not in SIGNALS for s in chosen):
        raise QueryError(f"signals: use a comma-separated subset of {', '.join(SIGNALS)}")
    return chosen


@router.get("/health")
def health(store: StoreDep) -> ConsoleJSON:
    """Readiness: the store is open and answers a query."""
    if not store.healthy:
        return ConsoleJSON({"status": "unavailable"}, status_code=503)
    store.reader().execute("SELECT 1").fetchone()
    return ConsoleJSON({"status": "ok"})


@router.get("/stats")
def stats(store: StoreDep, options: OptionsDep) -> ConsoleJSON:
    """Ingest counters, storage use, retention settings and what eviction removed."""
    # The eviction counters are published after their slice's commit, so reading them
    # before the rows keeps the answer consistent: the counts below already miss every row
    # the counters say was evicted (read the other way round, a slice could commit between
    # the two reads and the answer show rows as both evicted and stored).
    evicted = store.evictions.as_dict()
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
            "otlp_url": options.otlp_url,
            "disk": {
                "db_bytes": disk["db"],
                "wal_bytes": disk["wal"],
                "used_bytes": store.used_bytes(conn),
            },
            "retention_seconds": store.retention_ns / 1e9 if store.retention_ns else None,
            "max_db_bytes": store.max_db_bytes,
            "oldest_unix_nano": min(present) if present else None,
            "evicted": evicted,
            "token_required": options.security.token is not None,
        }
    )


NDJSON = "application/x-ndjson"


@router.get(
    "/export",
    response_model=None,
    # What it sends: JSON Lines, not the router's default JSON (an error still is JSON).
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "OTLP JSON Lines, one OTLP JSON document a line",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        404: {"description": "No such trace"},
    },
)
def export(
    store: StoreDep,
    trace_id: TraceIdParam = None,
    since: Since = None,
    until: Until = None,
    signals: Annotated[str | None, Query(description="traces,logs,metrics"), Blank] = None,
) -> StreamingResponse | ConsoleJSON:
    """OTLP JSON Lines: one trace (with its logs), or everything in a time range."""
    chosen = _signals(signals)
    if trace_id is not None:
        tid = trace_id
        found = store.reader().execute("SELECT 1 FROM traces WHERE trace_id = ?", (tid,))
        if found.fetchone() is None:
            return error(404, f"trace {tid.hex()} not found")
        filename = f"trace-{tid.hex()}.jsonl"

        def produce(conn: sqlite3.Connection) -> Iterator[str]:
            return transfer.export_trace(conn, tid)

    else:
        since_ns = since or 0
        until_ns = until or queries.INT64_MAX
        filename = "otel-lab-export.jsonl"

        def produce(conn: sqlite3.Connection) -> Iterator[str]:
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
        media_type=NDJSON,
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/import")
async def import_(store: StoreDep, request: Request) -> ConsoleJSON:
    """OTLP JSON (one document or JSON Lines, gzip allowed), as exported or as sent
    to /v1/*; rows go through the same writer queue as ingest."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            return error(413, f"file larger than {MAX_IMPORT_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        return error(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    if body[:2] == b"\x1f\x8b" and encoding in ("", "identity"):
        encoding = "gzip"  # a .jsonl.gz file uploaded as it is
    try:
        return await run_in_threadpool(_import, store, decompress(body, encoding))
    except BodyTooLarge as exc:
        return error(413, str(exc))
    except (DecodeError, UnicodeDecodeError) as exc:
        return error(400, f"not OTLP JSON: {exc}")


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


def _submit(store: Store, batch: Batch) -> bool:
    """Queue the batch in pieces, waiting up to a minute for room in the queue."""
    for piece in _split(batch, max(1, store.max_pending_rows // 2)):
        deadline = time.monotonic() + 60
        while not store.submit(piece):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    return True


def _import(store: Store, body: bytes) -> ConsoleJSON:
    counts = {"spans": 0, "logs": 0, "metric_points": 0, "rejected": 0}
    problems: list[str] = []
    oldest: int | None = None
    for _signal_name, batch in transfer.parse_import(body):
        counts["spans"] += len(batch.spans)
        counts["logs"] += len(batch.logs)
        counts["metric_points"] += len(batch.points)
        counts["rejected"] += batch.rejected
        problems += [p for p in batch.problems if p not in problems]
        first = batch.oldest_ns()
        if first is not None:
            oldest = first if oldest is None else min(oldest, first)
        if not _submit(store, batch):
            return error(503, "the write queue stayed full; try again")
    store.flush(timeout=60)
    result: JSONObject = {"imported": counts, "problems": problems[:5]}
    if oldest is not None and store.retention_ns and oldest < time.time_ns() - store.retention_ns:
        result["warning"] = (
            "some imported data is older than the retention "
            f"({store.retention_ns / 3.6e12:g}h) and will be evicted; restart the console "
            "with a longer --retention to keep it"
        )
    return ConsoleJSON(result)


@router.post("/clear")
def clear(store: StoreDep, confirm: str | None = None) -> ConsoleJSON:
    """Delete all stored telemetry. Needs ``?confirm=yes`` so it is never an accident."""
    if confirm != "yes":
        raise QueryError("clearing deletes all telemetry: repeat with ?confirm=yes")
    return ConsoleJSON({"cleared": store.clear()})
