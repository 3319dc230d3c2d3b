"""SQLite storage for the console: one file, WAL mode, one writer thread, many readers.

Why this shape:

* Receivers must answer fast and never wait for the disk, so requests only decode and
  enqueue; a single writer thread drains the queue and commits many requests per
  transaction (SQLite allows one writer anyway, and batching is where its speed is).
* The queue is bounded in rows: when it is full the receiver answers 503 + Retry-After,
  and exporters retry later, instead of this process growing without limit.
* WAL lets the API's read connections run while the writer commits.
* Ids are stored as BLOBs (16/8 bytes instead of 32/16 hex characters) to keep spans
  and their indexes small; the API speaks lowercase hex.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from otel_lab.console.otlp import Batch

log = logging.getLogger("otel_lab.console.store")

SCHEMA_VERSION = 1
OPTIMIZE_EVERY_SECONDS = 300
KNOWN_IDS_MAX = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;

-- One row per distinct resource attribute set (ids are content hashes, see otlp.stable_id).
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY,
    service_name TEXT NOT NULL,
    attributes TEXT
);
CREATE TABLE IF NOT EXISTS scopes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT,
    attributes TEXT
);

CREATE TABLE IF NOT EXISTS spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    status_message TEXT,
    attributes TEXT,
    events TEXT,
    links TEXT,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL
);
-- Unique: an exporter retry of the same batch does not duplicate spans.
CREATE UNIQUE INDEX IF NOT EXISTS spans_trace ON spans (trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_service_time ON spans (service_name, start_ns);
CREATE INDEX IF NOT EXISTS spans_name ON spans (name, start_ns);
CREATE INDEX IF NOT EXISTS spans_duration ON spans (duration_ns);
-- Errors are rare: a partial index finds them without indexing every span's status.
CREATE INDEX IF NOT EXISTS spans_errors ON spans (start_ns) WHERE status_code = 2;

-- Per-trace summary kept by the writer, so listing traces never aggregates spans.
CREATE TABLE IF NOT EXISTS traces (
    trace_id BLOB PRIMARY KEY,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    root_name TEXT,
    root_service TEXT,
    has_root INTEGER NOT NULL,
    services TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_start ON traces (start_ns);
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration_ns);

CREATE TABLE IF NOT EXISTS logs (
    time_ns INTEGER NOT NULL,
    observed_ns INTEGER,
    severity_number INTEGER NOT NULL,
    severity_text TEXT,
    body TEXT,
    body_is_json INTEGER NOT NULL,
    attributes TEXT,
    trace_id BLOB,
    span_id BLOB,
    event_name TEXT,
    service_name TEXT NOT NULL,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_time ON logs (time_ns);
CREATE INDEX IF NOT EXISTS logs_service_time ON logs (service_name, time_ns);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id) WHERE trace_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    unit TEXT,
    description TEXT,
    is_monotonic INTEGER,
    temporality INTEGER
);
CREATE TABLE IF NOT EXISTS metric_services (
    metric_id INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    PRIMARY KEY (metric_id, service_name)
) WITHOUT ROWID;
-- value has no declared type on purpose: ints stay ints, doubles stay doubles.
CREATE TABLE IF NOT EXISTS metric_points (
    metric_id INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    attributes TEXT,
    start_ns INTEGER,
    time_ns INTEGER NOT NULL,
    value,
    data TEXT,
    exemplars TEXT,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metric_points_metric_time ON metric_points (metric_id, time_ns);

-- Small catalogues for pickers in the UI, kept by the writer.
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL DEFAULT 0,
    log_count INTEGER NOT NULL DEFAULT 0,
    point_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operations (
    service_name TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (service_name, name, kind)
) WITHOUT ROWID;
"""


class MultiInsert:
    """``INSERT ... VALUES (..), (..), ...`` in chunks of many rows per statement.

    ``executemany`` steps once per row, and the sqlite3 module releases and re-takes the
    GIL around every step; with the receiver decoding on the other thread that hand-off
    dominates. One statement per 1024 rows keeps the writer in C, without the GIL, for
    most of a transaction. Chunk sizes are few and fixed so the prepared statements stay
    in the connection's statement cache.
    """

    CHUNKS = (1024, 128, 16)

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        self.head, self.width, self.tail = head, width, tail
        self._row = "(" + ",".join("?" * width) + ")"
        self._sql = {n: self._build(n) for n in (*self.CHUNKS, 1)}

    def _build(self, rows: int) -> str:
        return f"{self.head} VALUES {','.join([self._row] * rows)} {self.tail}"

    def run(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
        """Insert all rows; returns the number of rows changed (ignored rows excluded)."""
        changed = 0
        i, n = 0, len(rows)
        for size in self.CHUNKS:
            sql = self._sql[size]
            while n - i >= size:
                changed += db.execute(sql, list(chain.from_iterable(rows[i : i + size]))).rowcount
                i += size
        if i < n:
            changed += db.executemany(self._sql[1], rows[i:]).rowcount
        return changed


INSERT_SPANS = MultiInsert("INSERT OR IGNORE INTO spans", 16)
INSERT_LOGS = MultiInsert(
    "INSERT INTO logs (time_ns, observed_ns, severity_number, severity_text, body, body_is_json,"
    " attributes, trace_id, span_id, event_name, service_name, resource_id, scope_id)",
    13,
)
INSERT_POINTS = MultiInsert(
    "INSERT INTO metric_points (metric_id, service_name, attributes, start_ns, time_ns, value,"
    " data, exemplars, resource_id, scope_id)",
    10,
)
UPSERT_TRACES = MultiInsert(
    """INSERT INTO traces (trace_id, start_ns, end_ns, duration_ns, span_count, error_count,
                    root_name, root_service, has_root, services)""",
    10,
    """ON CONFLICT (trace_id) DO UPDATE SET
    start_ns = min(start_ns, excluded.start_ns),
    end_ns = max(end_ns, excluded.end_ns),
    duration_ns = max(end_ns, excluded.end_ns) - min(start_ns, excluded.start_ns),
    span_count = span_count + excluded.span_count,
    error_count = error_count + excluded.error_count,
    root_name = CASE
        WHEN has_root THEN root_name
        WHEN excluded.has_root OR excluded.start_ns < start_ns THEN excluded.root_name
        ELSE root_name END,
    root_service = CASE
        WHEN has_root THEN root_service
        WHEN excluded.has_root OR excluded.start_ns < start_ns THEN excluded.root_service
        ELSE root_service END,
    has_root = max(has_root, excluded.has_root),
    services = merge_services(services, excluded.services)""",
)
UPSERT_SERVICE = """
INSERT INTO services (name, first_seen_ns, last_seen_ns, span_count, log_count, point_count)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
    last_seen_ns = max(last_seen_ns, excluded.last_seen_ns),
    span_count = span_count + excluded.span_count,
    log_count = log_count + excluded.log_count,
    point_count = point_count + excluded.point_count
"""
UPSERT_METRIC = """
INSERT INTO metrics (id, name, type, unit, description, is_monotonic, temporality)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET type = excluded.type, unit = excluded.unit,
    description = excluded.description, is_monotonic = excluded.is_monotonic,
    temporality = excluded.temporality
"""


def _merge_services(old: str, new: str) -> str:
    """SQL function: union of two JSON arrays of service names, sorted."""
    if old == new:
        return old
    return json.dumps(sorted(set(json.loads(old)) | set(json.loads(new))), separators=(",", ":"))


@dataclass
class StoreStats:
    """Counters for /api/stats and benchmarks (written by the writer thread only)."""

    spans_written: int = 0
    logs_written: int = 0
    points_written: int = 0
    duplicate_spans: int = 0
    transactions: int = 0
    rows_refused: int = 0
    write_errors: int = 0
    last_commit_ms: float = 0.0
    started_at: float = field(default_factory=time.time)


_STOP = object()


class Store:
    """Owns the database file: the writer thread, its queue and the read connections."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_pending_rows: int = 100_000,
        max_rows_per_transaction: int = 20_000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_pending_rows = max_pending_rows
        self.max_rows_per_transaction = max_rows_per_transaction
        self.stats = StoreStats()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Condition(self._pending_lock)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

        self._db = self._connect()
        self._db.executescript(SCHEMA)
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._db.execute("PRAGMA analysis_limit=1000")
        self._optimized_at = time.monotonic()
        self._db.create_function("merge_services", 2, _merge_services, deterministic=True)
        # Ids already committed: skip re-inserting the same resource/scope/metric every batch.
        self._known_resources: set[int] = set()
        self._known_scopes: set[int] = set()
        self._known_metrics: dict[int, tuple[Any, ...]] = {}
        self._known_metric_services: set[tuple[int, str]] = set()
        self._known_operations: set[tuple[str, str, int]] = set()
        self._writer = threading.Thread(target=self._run, name="console-store-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ connections

    def _connect(self, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        conn.execute("PRAGMA temp_store=MEMORY")
        if readonly:
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA cache_size=-16000")  # 16 MB page cache per API thread
        else:
            conn.execute("PRAGMA cache_size=-64000")  # the writer touches every index
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (API handlers run in a thread pool)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several queries see one consistent state."""
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @property
    def healthy(self) -> bool:
        return not self._closed and self._writer.is_alive()

    @property
    def pending_rows(self) -> int:
        return self._pending

    # ------------------------------------------------------------------ ingest

    def submit(self, batch: Batch) -> bool:
        """Queue a batch for the writer; False (and nothing queued) when the queue is full."""
        rows = batch.rows
        if rows == 0 and not batch.resources:
            return True
        with self._pending_lock:
            if self._closed or self._pending + rows > self.max_pending_rows:
                self.stats.rows_refused += rows
                return False
            self._pending += rows
        self._queue.put(batch)
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        """Commit what is queued, stop the writer, checkpoint the WAL and close everything."""
        if self._closed:
            return
        with self._pending_lock:
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout=30)
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
        try:
            self._db.execute("PRAGMA optimize")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # pragma: no cover
            log.warning("WAL checkpoint at close failed: %s", exc)
        self._db.close()

    def _run(self) -> None:
        """Writer loop: take everything that is queued (up to a cap), commit it at once."""
        stop = False
        while not stop:
            batches: list[Batch] = []
            item = self._queue.get()
            rows = 0
            while True:
                if item is _STOP:
                    stop = True
                else:
                    batches.append(item)
                    rows += item.rows
                if stop or rows >= self.max_rows_per_transaction:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if stop:  # drain whatever arrived before the stop marker
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        batches.append(item)
                        rows += item.rows
            if batches:
                try:
                    self._write_or_isolate(batches)
                    if time.monotonic() - self._optimized_at > OPTIMIZE_EVERY_SECONDS:
                        self._optimize()
                except Exception:  # the writer must survive anything
                    log.exception("console store: unexpected writer error")
                finally:
                    with self._idle:
                        self._pending -= rows
                        if self._pending <= 0:
                            self._idle.notify_all()

    def _write_or_isolate(self, batches: list[Batch]) -> None:
        """Write all batches in one transaction; if that fails, write them one by one so a
        single bad request loses only its own rows."""
        try:
            self._write(batches)
            return
        except Exception as exc:
            self._forget_known()
            if len(batches) == 1:
                self.stats.write_errors += 1
                log.error("dropping a batch of %d rows: %r", batches[0].rows, exc)
                return
        for batch in batches:
            try:
                self._write([batch])
            except Exception as exc:
                self._forget_known()
                self.stats.write_errors += 1
                log.error("dropping a batch of %d rows: %r", batch.rows, exc)

    def _optimize(self) -> None:
        """Refresh planner statistics now and then (bounded work: analysis_limit)."""
        self._optimized_at = time.monotonic()
        self._db.execute("PRAGMA optimize")

    def _forget_known(self) -> None:
        self._known_resources.clear()
        self._known_scopes.clear()
        self._known_metrics.clear()
        self._known_metric_services.clear()
        self._known_operations.clear()

    def _write(self, batches: list[Batch]) -> None:
        started = time.perf_counter()
        db = self._db
        resources: dict[int, tuple[Any, ...]] = {}
        scopes: dict[int, tuple[Any, ...]] = {}
        metrics: dict[int, tuple[Any, ...]] = {}
        metric_services: set[tuple[int, str]] = set()
        spans: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        points: list[tuple[Any, ...]] = []
        for b in batches:
            resources.update(b.resources)
            scopes.update(b.scopes)
            metrics.update(b.metrics)
            metric_services |= b.metric_services
            spans.extend(b.spans)
            logs.extend(b.logs)
            points.extend(b.points)
        received = len(spans)
        new_resources = [r for rid, r in resources.items() if rid not in self._known_resources]
        new_scopes = [s for sid, s in scopes.items() if sid not in self._known_scopes]
        new_metrics = [m for mid, m in metrics.items() if self._known_metrics.get(mid) != m]
        new_metric_services = metric_services - self._known_metric_services

        db.execute("BEGIN IMMEDIATE")
        try:
            if new_resources:
                db.executemany("INSERT OR IGNORE INTO resources VALUES (?, ?, ?)", new_resources)
            if new_scopes:
                db.executemany("INSERT OR IGNORE INTO scopes VALUES (?, ?, ?, ?)", new_scopes)
            if new_metrics:
                db.executemany(UPSERT_METRIC, new_metrics)
            if new_metric_services:
                db.executemany(
                    "INSERT OR IGNORE INTO metric_services VALUES (?, ?)", new_metric_services
                )
            if spans:
                db.execute("SAVEPOINT spans")
                if INSERT_SPANS.run(db, spans) != len(spans):
                    # Some spans are already stored (an exporter retried): insert only the
                    # new ones, so the summaries below count every span exactly once.
                    db.execute("ROLLBACK TO spans")
                    spans = self._unseen(spans)
                    INSERT_SPANS.run(db, spans)
                db.execute("RELEASE spans")
            if logs:
                INSERT_LOGS.run(db, logs)
            if points:
                INSERT_POINTS.run(db, points)
            services, operations, traces = _summarise(spans, logs, points)
            if traces:
                UPSERT_TRACES.run(db, traces)
            if services:
                db.executemany(UPSERT_SERVICE, services)
            new_operations = operations - self._known_operations
            if new_operations:
                db.executemany("INSERT OR IGNORE INTO operations VALUES (?, ?, ?)", new_operations)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._known_resources.update(r[0] for r in new_resources)
        self._known_scopes.update(s[0] for s in new_scopes)
        self._known_metrics.update((m[0], m) for m in new_metrics)
        self._known_metric_services |= new_metric_services
        self._known_operations |= new_operations
        if (
            len(self._known_operations) > KNOWN_IDS_MAX
            or len(self._known_resources) > KNOWN_IDS_MAX
        ):
            self._forget_known()  # high-cardinality names: bound memory, re-insert is harmless
        st = self.stats
        st.spans_written += len(spans)
        st.duplicate_spans += received - len(spans)
        st.logs_written += len(logs)
        st.points_written += len(points)
        st.transactions += 1
        st.last_commit_ms = (time.perf_counter() - started) * 1000

    def _unseen(self, spans: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Spans not stored yet (nor repeated earlier in the same list)."""
        seen: set[tuple[bytes, bytes]] = set()
        for trace_id in {s[0] for s in spans}:
            seen.update(
                self._db.execute(
                    "SELECT trace_id, span_id FROM spans WHERE trace_id = ?", (trace_id,)
                )
            )
        fresh = []
        for s in spans:
            key = (s[0], s[1])
            if key not in seen:
                seen.add(key)
                fresh.append(s)
        return fresh


def _summarise(
    spans: list[tuple[Any, ...]], logs: list[tuple[Any, ...]], points: list[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], set[tuple[str, str, int]], list[tuple[Any, ...]]]:
    """Rows for the services, operations and traces summary tables, from new rows only."""
    services: dict[str, list[int]] = {}  # name -> [first, last, spans, logs, points]
    operations: set[tuple[str, str, int]] = set()
    traces: dict[bytes, list[Any]] = {}
    for s in spans:
        # s = (trace_id, span_id, parent, name, kind, service, start, end, duration, code, ...)
        service, start, end = s[5], s[6], s[7]
        svc = services.get(service)
        if svc is None:
            services[service] = [start, end, 1, 0, 0]
        else:
            svc[0] = min(svc[0], start)
            svc[1] = max(svc[1], end)
            svc[2] += 1
        operations.add((service, s[3], s[4]))
        is_root = s[2] is None
        t = traces.get(s[0])
        if t is None:
            # [start, end, spans, errors, root name, root service, has root, services]
            traces[s[0]] = [start, end, 1, int(s[9] == 2), s[3], service, int(is_root), {service}]
            continue
        if start < t[0]:
            t[0] = start
            if not t[6]:
                t[4], t[5] = s[3], service
        if end > t[1]:
            t[1] = end
        t[2] += 1
        t[3] += s[9] == 2
        if is_root and not t[6]:
            t[4], t[5], t[6] = s[3], service, 1
        t[7].add(service)
    # (rows, counter slot, service column, time column) for logs and metric points
    for rows, slot, service_col, time_col in ((logs, 3, 10, 0), (points, 4, 1, 4)):
        for row in rows:
            service, ts = row[service_col], row[time_col]
            svc = services.get(service)
            if svc is None:
                svc = services[service] = [ts, ts, 0, 0, 0]
            else:
                svc[0] = min(svc[0], ts)
                svc[1] = max(svc[1], ts)
            svc[slot] += 1
    trace_rows = [
        (tid, t[0], t[1], t[1] - t[0], t[2], t[3], t[4], t[5], t[6],
         json.dumps(sorted(t[7]), separators=(",", ":")))
        for tid, t in traces.items()
    ]  # fmt: skip
    return [(name, *v) for name, v in services.items()], operations, trace_rows
