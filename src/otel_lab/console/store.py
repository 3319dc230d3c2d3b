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
* Everything that changes data runs in the writer thread: ingest, RED aggregation,
  retention/size eviction (in small slices between ingest transactions, so exporters never
  wait long) and clear-all (a command queued behind the batches already accepted).
* Evictions are counted and kept in ``meta``, so the UI can say what was dropped and why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
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

SCHEMA_VERSION = 2
OPTIMIZE_EVERY_SECONDS = 300
KNOWN_IDS_MAX = 100_000
# Eviction works in slices of at most this many rows per table, so one slice is a short
# transaction and ingest batches interleave with it.
EVICT_SLICE_ROWS = 5000
# Size eviction removes this share of the stored time range per step, then re-measures.
SIZE_STEP_FRACTION = 0.05
# Size eviction stops at this share of the cap, so it does not run again at once.
SIZE_TARGET_FRACTION = 0.9
# RED keeps at most this many routes per service; more fold into OTHER_ROUTES (a service
# that names server spans after raw paths must not grow the table without bound).
MAX_ROUTES_PER_SERVICE = 300
OTHER_ROUTES = "(other routes)"
MINUTE_NS = 60_000_000_000
# Latency histogram buckets: 8 per power of two (about 9% wide), as in HDR-style sketches.
HIST_SUB_BUCKETS = 8

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
-- For retention: the oldest points across all metrics.
CREATE INDEX IF NOT EXISTS metric_points_time ON metric_points (time_ns);

-- RED (rate, errors, duration) per service, route and minute, aggregated by the writer from
-- SERVER and CONSUMER spans. hist is a JSON object {bucket: count} of log-scaled durations
-- (see store.hist_bucket), so percentiles over any window come from merging a few rows
-- instead of reading every span.
CREATE TABLE IF NOT EXISTS red (
    service_name TEXT NOT NULL,
    route TEXT NOT NULL,
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    sum_ns INTEGER NOT NULL,
    min_ns INTEGER NOT NULL,
    max_ns INTEGER NOT NULL,
    hist TEXT NOT NULL,
    slow_trace_id BLOB,
    error_trace_id BLOB,
    search TEXT,
    PRIMARY KEY (service_name, route, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS red_minute ON red (minute);

-- Series scraped from the services' /metrics (see console.scrape): Prometheus' data model.
-- A sample is written only when its value changed (or every few minutes), so a series holds
-- its value at every scrape of its job (prom_scrapes) until the next sample; value NULL is a
-- stale marker (the series disappeared).
CREATE TABLE IF NOT EXISTS prom_series (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS prom_samples (
    series_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prom_samples_time ON prom_samples (time_ns);
CREATE TABLE IF NOT EXISTS prom_scrapes (
    job TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    up INTEGER NOT NULL,
    instance TEXT NOT NULL,
    PRIMARY KEY (job, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prom_scrapes_time ON prom_scrapes (time_ns);
-- Exemplars as scraped (a new row only when a bucket's exemplar changes).
CREATE TABLE IF NOT EXISTS prom_exemplars (
    series_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    value REAL,
    trace_id TEXT,
    span_id TEXT,
    labels TEXT,
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prom_exemplars_time ON prom_exemplars (time_ns);

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
UPSERT_RED = """
INSERT INTO red (service_name, route, minute, count, errors, sum_ns, min_ns, max_ns, hist,
                 slow_trace_id, error_trace_id, search)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service_name, route, minute) DO UPDATE SET
    count = count + excluded.count,
    errors = errors + excluded.errors,
    sum_ns = sum_ns + excluded.sum_ns,
    min_ns = min(min_ns, excluded.min_ns),
    max_ns = max(max_ns, excluded.max_ns),
    hist = merge_hist(hist, excluded.hist),
    slow_trace_id = CASE WHEN excluded.max_ns > max_ns THEN excluded.slow_trace_id
                    ELSE slow_trace_id END,
    error_trace_id = coalesce(error_trace_id, excluded.error_trace_id)
"""
UPSERT_METRIC = """
INSERT INTO metrics (id, name, type, unit, description, is_monotonic, temporality)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET type = excluded.type, unit = excluded.unit,
    description = excluded.description, is_monotonic = excluded.is_monotonic,
    temporality = excluded.temporality
"""


def hist_bucket(duration_ns: int) -> int:
    """Log-scaled bucket of a duration: 8 buckets per power of two of nanoseconds."""
    return int(math.log2(duration_ns) * HIST_SUB_BUCKETS) if duration_ns > 1 else 0


def hist_bounds(bucket: int) -> tuple[float, float]:
    """[lower, upper) of a bucket, in nanoseconds."""
    if bucket <= 0:
        return 0.0, 2 ** (1 / HIST_SUB_BUCKETS)
    return 2 ** (bucket / HIST_SUB_BUCKETS), 2 ** ((bucket + 1) / HIST_SUB_BUCKETS)


def _merge_hist(old: str, new: str) -> str:
    """SQL function: sum of two JSON histograms {bucket: count}."""
    merged: dict[str, int] = json.loads(old)
    for bucket, count in json.loads(new).items():
        merged[bucket] = merged.get(bucket, 0) + count
    return json.dumps(merged, separators=(",", ":"))


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


@dataclass
class EvictionStats:
    """What retention and the size cap removed (persisted in ``meta``; reset by clear-all)."""

    spans: int = 0
    traces: int = 0
    logs: int = 0
    points: int = 0
    last_at: float | None = None  # unix seconds
    last_reason: str | None = None  # "retention" or "size"
    last_cutoff_ns: int | None = None  # everything older than this was removed
    cleared_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "spans": self.spans,
            "traces": self.traces,
            "logs": self.logs,
            "metric_points": self.points,
            "last_at": self.last_at,
            "last_reason": self.last_reason,
            "last_cutoff_unix_nano": self.last_cutoff_ns,
            "cleared_at": self.cleared_at,
        }


@dataclass
class _Plan:
    """An eviction in progress: remove everything older than ``cutoff_ns``."""

    reason: str
    cutoff_ns: int


class _Command:
    """Work for the writer thread that must run in order with the queued batches."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = object()


class Store:
    """Owns the database file: the writer thread, its queue and the read connections."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_pending_rows: int = 100_000,
        max_rows_per_transaction: int = 20_000,
        retention_seconds: float | None = None,
        max_db_bytes: int | None = None,
        housekeeping_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_pending_rows = max_pending_rows
        self.max_rows_per_transaction = max_rows_per_transaction
        self.retention_ns = int(retention_seconds * 1e9) if retention_seconds else None
        self.max_db_bytes = max_db_bytes or None
        self.housekeeping_interval = housekeeping_interval
        self.stats = StoreStats()
        self.evictions = EvictionStats()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Condition(self._pending_lock)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # Bumped by clear(): the scraper then forgets its series ids and last values.
        self.clear_generation = 0

        self._db = self._connect()
        self._db.executescript(SCHEMA)
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._db.execute("PRAGMA analysis_limit=1000")
        self._optimized_at = time.monotonic()
        self._db.create_function("merge_services", 2, _merge_services, deterministic=True)
        self._db.create_function("merge_hist", 2, _merge_hist, deterministic=True)
        self._load_evictions()
        # Ids already committed: skip re-inserting the same resource/scope/metric every batch.
        self._known_resources: set[int] = set()
        self._known_scopes: set[int] = set()
        self._known_metrics: dict[int, tuple[Any, ...]] = {}
        self._known_metric_services: set[tuple[int, str]] = set()
        self._known_operations: set[tuple[str, str, int]] = set()
        self._red_routes: dict[str, set[str]] = {}
        self._plan: _Plan | None = None
        self._plan_was_size = False  # while shrinking, aim below the cap (hysteresis)
        self._next_check = 0.0
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
            # A checkpointed WAL shrinks back to this size instead of keeping its peak.
            conn.execute("PRAGMA journal_size_limit=67108864")
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

    def open_reader(self) -> sqlite3.Connection:
        """A private read connection (for a streaming export); the caller closes it."""
        if self._closed:
            raise RuntimeError("store is closed")
        return self._connect(readonly=True)

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

    def disk_bytes(self) -> dict[str, int]:
        """Sizes of the database file and its WAL (what the size cap is compared with)."""
        sizes = {}
        for name, suffix in (("db", ""), ("wal", "-wal")):
            try:
                sizes[name] = Path(f"{self.path}{suffix}").stat().st_size
            except OSError:
                sizes[name] = 0
        return sizes

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

    def call(self, fn: Any, timeout: float = 120.0) -> Any:
        """Run ``fn(db)`` in the writer thread after the batches queued so far; its result."""
        if self._closed:
            raise RuntimeError("store is closed")
        command = _Command(fn)
        self._queue.put(command)
        if not command.done.wait(timeout):
            raise TimeoutError("the store's writer did not answer in time")
        if command.error is not None:
            raise command.error
        return command.result

    def clear(self) -> dict[str, int]:
        """Delete all telemetry (in the writer thread, after what is already queued)."""
        return self.call(self._clear)

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
        """Writer loop: take everything that is queued (up to a cap), commit it at once;
        between commits, do one slice of housekeeping (eviction)."""
        stop = False
        while not stop:
            batches: list[Batch] = []
            commands: list[_Command] = []
            try:
                if self._plan is not None:
                    item = self._queue.get_nowait()  # eviction pending: do not sleep
                else:
                    wait = max(0.01, self._next_check - time.monotonic())
                    item = self._queue.get(timeout=min(wait, self.housekeeping_interval))
            except queue.Empty:
                item = None
            rows = 0
            while item is not None:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, _Command):
                    commands.append(item)  # runs after the batches queued before it
                    break
                batches.append(item)
                rows += item.rows
                if rows >= self.max_rows_per_transaction:
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
                    if isinstance(item, _Command):
                        item.error = RuntimeError("store is closing")
                        item.done.set()
                    elif item is not _STOP:
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
            for command in commands:
                try:
                    command.result = command.fn(self._db)
                except BaseException as exc:
                    command.error = exc
                finally:
                    command.done.set()
            if not stop:
                try:
                    self._housekeep()
                except Exception:
                    self._plan = None
                    with contextlib.suppress(sqlite3.Error):
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
                    log.exception("console store: eviction failed; retrying later")

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
            red = self._red_rows(spans)
            if red:
                db.executemany(UPSERT_RED, red)
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

    # ------------------------------------------------------------------ RED

    def _route_key(self, service: str, route: str) -> str:
        """The route as stored, folding a service's routes beyond the cap into one."""
        routes = self._red_routes.get(service)
        if routes is None:
            routes = self._red_routes[service] = {
                r for (r,) in self._db.execute(
                    "SELECT DISTINCT route FROM red WHERE service_name = ?", (service,)
                )
            }  # fmt: skip
        if route in routes:
            return route
        if len(routes) >= MAX_ROUTES_PER_SERVICE:
            return OTHER_ROUTES
        routes.add(route)
        return route

    def _red_rows(self, spans: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Per (service, route, minute) aggregates of SERVER and CONSUMER spans.

        The route is ``METHOD http.route`` when the span has ``http.route`` (a template,
        so low-cardinality), otherwise the span name. ``search`` holds the trace-search
        filter that finds the spans of this route (for the jump to example traces).
        """
        agg: dict[tuple[str, str, int], list[Any]] = {}
        searches: dict[tuple[str, str], str] = {}
        for s in spans:
            kind = s[4]
            if kind != 2 and kind != 5:
                continue
            service, name, attrs = s[5], s[3], s[11]
            route, search = name, None
            if attrs and '"http.route"' in attrs:
                a = json.loads(attrs)
                http_route = a.get("http.route")
                if isinstance(http_route, str) and http_route:
                    filters = [f"http.route={http_route}"]
                    route = http_route
                    for method_key in ("http.request.method", "http.method"):
                        method = a.get(method_key)
                        if isinstance(method, str) and method:
                            route = f"{method} {http_route}"
                            filters.append(f"{method_key}={method}")
                            break
                    search = json.dumps({"attr": filters}, separators=(",", ":"))
            route = self._route_key(service, route)
            if route == OTHER_ROUTES:
                search = None
            elif search is None:
                search = json.dumps({"name": name}, separators=(",", ":"))
            duration, error = s[8], s[9] == 2
            key = (service, route, s[6] // MINUTE_NS)
            row = agg.get(key)
            if row is None:
                # [count, errors, sum, min, max, hist, slow trace, error trace]
                row = agg[key] = [0, 0, 0, duration, duration, {}, s[0], None]
                searches.setdefault((service, route), search or "")
            row[0] += 1
            row[2] += duration
            if error:
                row[1] += 1
                if row[7] is None:
                    row[7] = s[0]
            if duration < row[3]:
                row[3] = duration
            if duration > row[4]:
                row[4] = duration
                row[6] = s[0]
            bucket = hist_bucket(duration)
            row[5][bucket] = row[5].get(bucket, 0) + 1
        return [
            (service, route, minute, r[0], r[1], r[2], r[3], r[4],
             json.dumps(r[5], separators=(",", ":")), r[6], r[7],
             searches.get((service, route)) or None)
            for (service, route, minute), r in agg.items()
        ]  # fmt: skip

    # ------------------------------------------------------------------ eviction

    def _load_evictions(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'evictions'").fetchone()
        if row:
            with contextlib.suppress(ValueError, TypeError):
                data = json.loads(row[0])
                self.evictions = EvictionStats(**data)

    def _save_evictions(self) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('evictions', ?)",
            (json.dumps(self.evictions.__dict__),),
        )

    def used_bytes(self, db: sqlite3.Connection | None = None) -> int:
        """Bytes in use inside the database file (free pages are reused before it grows)."""
        db = db or self._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _time_range(self) -> tuple[int | None, int | None]:
        """Oldest and newest timestamps over traces, logs and metric points (indexed)."""
        lows, highs = [], []
        for table, column in (("traces", "start_ns"), ("logs", "time_ns"),
                              ("metric_points", "time_ns"),
                              ("prom_scrapes", "time_ns")):  # fmt: skip
            low, high = self._db.execute(
                f"SELECT min({column}), max({column}) FROM {table}"
            ).fetchone()
            if low is not None:
                lows.append(low)
                highs.append(high)
        return (min(lows), max(highs)) if lows else (None, None)

    def _housekeep(self) -> None:
        """Start an eviction when one is due, or run the next slice of the current one."""
        if self._plan is None:
            now = time.monotonic()
            if now < self._next_check:
                return
            self._next_check = now + self.housekeeping_interval
            self._plan = self._plan_eviction()
            if self._plan is None:
                return
        plan = self._plan
        if self._evict_slice(plan.cutoff_ns, plan.reason):
            self._plan = None
            if plan.reason == "size":
                self._next_check = 0.0  # measure again at once: another step may be needed

    def _plan_eviction(self) -> _Plan | None:
        if self.retention_ns is None and self.max_db_bytes is None:
            return None
        oldest, newest = self._time_range()
        if oldest is None or newest is None:
            return None
        if self.retention_ns is not None:
            cutoff = time.time_ns() - self.retention_ns
            if oldest < cutoff:
                return _Plan("retention", cutoff)
        if self.max_db_bytes is not None:
            used = self.used_bytes()
            if used > self.max_db_bytes * (SIZE_TARGET_FRACTION if self._plan_was_size else 1.0):
                step = max(int((newest - oldest) * SIZE_STEP_FRACTION), 1_000_000_000)
                self._plan_was_size = True
                return _Plan("size", oldest + step)
        self._plan_was_size = False
        return None

    def _evict_slice(self, cutoff_ns: int, reason: str) -> bool:
        """Delete one slice of data older than the cutoff; True when none is left."""
        db = self._db
        limit = EVICT_SLICE_ROWS
        removed: dict[str, list[int]] = {}  # service -> [spans, logs, points]

        def count(rows: list[tuple[str]], slot: int) -> None:
            for (service,) in rows:
                counters = removed.setdefault(service, [0, 0, 0])
                counters[slot] += 1

        db.execute("BEGIN IMMEDIATE")
        try:
            candidates = db.execute(
                "SELECT trace_id, span_count FROM traces WHERE start_ns < ?"
                " ORDER BY start_ns LIMIT 1000",
                (cutoff_ns,),
            ).fetchall()
            picked: list[bytes] = []
            budget = 0
            for trace_id, span_count in candidates:
                if picked and budget + span_count > limit:
                    break
                picked.append(trace_id)
                budget += span_count
            spans_removed = 0
            for i in range(0, len(picked), 500):
                chunk = picked[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"DELETE FROM spans WHERE trace_id IN ({marks}) RETURNING service_name",
                    chunk,
                ).fetchall()
                spans_removed += len(rows)
                count(rows, 0)
                db.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", chunk)
            logs = db.execute(
                "DELETE FROM logs WHERE rowid IN (SELECT rowid FROM logs WHERE time_ns < ?"
                " ORDER BY time_ns LIMIT ?) RETURNING service_name",
                (cutoff_ns, limit),
            ).fetchall()
            count(logs, 1)
            points = db.execute(
                "DELETE FROM metric_points WHERE rowid IN (SELECT rowid FROM metric_points"
                " WHERE time_ns < ? ORDER BY time_ns LIMIT ?) RETURNING service_name",
                (cutoff_ns, limit),
            ).fetchall()
            count(points, 2)
            db.execute("DELETE FROM red WHERE minute < ?", (cutoff_ns // MINUTE_NS,))
            scraped_left = False
            for table in ("prom_samples", "prom_exemplars", "prom_scrapes"):
                scraped_left |= _delete_older(db, table, cutoff_ns, limit)
            if removed:
                db.executemany(
                    "UPDATE services SET span_count = max(0, span_count - ?),"
                    " log_count = max(0, log_count - ?), point_count = max(0, point_count - ?)"
                    " WHERE name = ?",
                    [(c[0], c[1], c[2], service) for service, c in removed.items()],
                )
                db.execute(
                    "DELETE FROM services WHERE span_count = 0 AND log_count = 0"
                    " AND point_count = 0"
                )
            ev = self.evictions
            if spans_removed or logs or points:
                ev.spans += spans_removed
                ev.traces += len(picked)
                ev.logs += len(logs)
                ev.points += len(points)
                ev.last_at = time.time()
                ev.last_reason = reason
                ev.last_cutoff_ns = cutoff_ns
                self._save_evictions()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if spans_removed or logs or points:
            log.info(
                "evicted %d spans (%d traces), %d logs, %d metric points older than %s (%s)",
                spans_removed, len(picked), len(logs), len(points),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff_ns / 1e9)), reason,
            )  # fmt: skip
        return (
            len(picked) == len(candidates) < 1000
            and len(logs) < limit
            and len(points) < limit
            and not scraped_left
        )

    def _clear(self, db: sqlite3.Connection) -> dict[str, int]:
        """Delete every row of telemetry; runs in the writer thread."""
        stored = db.execute(
            "SELECT coalesce(sum(span_count), 0), coalesce(sum(log_count), 0),"
            " coalesce(sum(point_count), 0) FROM services"
        ).fetchone()
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("spans", "traces", "logs", "metric_points", "metrics",
                          "metric_services", "services", "operations", "resources", "scopes",
                          "red", "prom_samples", "prom_exemplars", "prom_scrapes",
                          "prom_series"):  # fmt: skip
                db.execute(f"DELETE FROM {table}")
            self.evictions = EvictionStats(cleared_at=time.time())
            self.clear_generation += 1
            self._save_evictions()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._forget_known()
        self._red_routes.clear()
        self._plan = None
        self._plan_was_size = False
        # Give the space back to the file system; readers may hold it up, which is harmless.
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.warning("cleared all telemetry (%d spans, %d logs, %d points)", *stored)
        return {"spans": stored[0], "logs": stored[1], "metric_points": stored[2]}


def _delete_older(db: sqlite3.Connection, table: str, cutoff_ns: int, limit: int) -> bool:
    """Delete about ``limit`` rows older than the cutoff from a table keyed by time_ns;
    True when older rows remain (the next slice continues)."""
    row = db.execute(
        f"SELECT time_ns FROM {table} WHERE time_ns < ? ORDER BY time_ns LIMIT 1 OFFSET ?",
        (cutoff_ns, limit),
    ).fetchone()
    db.execute(f"DELETE FROM {table} WHERE time_ns < ?", (cutoff_ns if row is None else row[0],))
    return row is not None


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
