"""Retention and the size cap: eviction in small slices between ingest transactions (so
exporters never wait long), counted and kept in ``meta`` so the UI can say what was dropped
and why; and clear-all. Everything here runs in the writer thread."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field

from otel_lab.console.store.summaries import MINUTE_NS
from otel_lab.jsontypes import JSONObject

log = logging.getLogger("otel_lab.console.store")

# Eviction works in slices of at most this many rows per table, so one slice is a short
# transaction and ingest batches interleave with it.
EVICT_SLICE_ROWS = 5000
# Size eviction removes this share of the stored time range per step, then re-measures.
SIZE_STEP_FRACTION = 0.05
# Size eviction stops at this share of the cap, so it does not run again at once.
SIZE_TARGET_FRACTION = 0.9
_TABLES = ("spans", "traces", "logs", "metric_points", "metrics", "metric_services", "services",
           "operations", "resources", "scopes", "red", "prom_samples", "prom_exemplars",
           "prom_scrapes", "prom_series")  # fmt: skip


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

    def as_dict(self) -> JSONObject:
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


@dataclass
class _Slice:
    """What one slice removed: per-service counts [spans, logs, points] and totals."""

    traces: int = 0
    spans: int = 0
    logs: int = 0
    points: int = 0
    done: bool = True
    by_service: dict[str, list[int]] = field(default_factory=dict)

    def count(self, rows: list[tuple[str]], slot: int) -> int:
        for (service,) in rows:
            self.by_service.setdefault(service, [0, 0, 0])[slot] += 1
        return len(rows)

    @property
    def removed(self) -> bool:
        return bool(self.spans or self.logs or self.points)


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes in use inside the database file (free pages are reused before it grows)."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (free,) = db.execute("PRAGMA freelist_count").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)


class Retention:
    """Evicts by age (``retention_ns``) and by size (``max_db_bytes``) on the writer's
    connection, one slice per call of :meth:`housekeep`."""

    def __init__(
        self,
        db: sqlite3.Connection,
        retention_ns: int | None,
        max_db_bytes: int | None,
        interval: float,
    ) -> None:
        self.db = db
        self.retention_ns = retention_ns
        self.max_db_bytes = max_db_bytes
        self.interval = interval
        self.evictions = self._load()
        self.plan: _Plan | None = None
        self._plan_was_size = False  # while shrinking, aim below the cap (hysteresis)
        self.next_check = 0.0

    def _load(self) -> EvictionStats:
        for (saved,) in self.db.execute("SELECT value FROM meta WHERE key = 'evictions'"):
            with contextlib.suppress(ValueError, TypeError):
                return EvictionStats(**json.loads(saved))
        return EvictionStats()

    def _save(self, evictions: EvictionStats) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('evictions', ?)",
            (json.dumps(evictions.__dict__),),
        )

    def reset(self) -> None:
        self.plan = None
        self._plan_was_size = False

    def _time_range(self) -> tuple[int | None, int | None]:
        """Oldest and newest timestamps over traces, logs and metric points (indexed)."""
        lows, highs = [], []
        for table, column in (("traces", "start_ns"), ("logs", "time_ns"),
                              ("metric_points", "time_ns"),
                              ("prom_scrapes", "time_ns")):  # fmt: skip
            low, high = self.db.execute(
                f"SELECT min({column}), max({column}) FROM {table}"
            ).fetchone()
            if low is not None:
                lows.append(low)
                highs.append(high)
        return (min(lows), max(highs)) if lows else (None, None)

    def housekeep(self) -> None:
        """Start an eviction when one is due, or run the next slice of the current one."""
        if self.plan is None:
            now = time.monotonic()
            if now < self.next_check:
                return
            self.next_check = now + self.interval
            self.plan = self._plan_eviction()
            if self.plan is None:
                return
        plan = self.plan
        if self._evict_slice(plan.cutoff_ns, plan.reason):
            self.plan = None
            if plan.reason == "size":
                self.next_check = 0.0  # measure again at once: another step may be needed

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
            target = SIZE_TARGET_FRACTION if self._plan_was_size else 1.0
            if used_bytes(self.db) > self.max_db_bytes * target:
                step = max(int((newest - oldest) * SIZE_STEP_FRACTION), 1_000_000_000)
                self._plan_was_size = True
                return _Plan("size", oldest + step)
        self._plan_was_size = False
        return None

    def _evict_slice(self, cutoff_ns: int, reason: str) -> bool:
        """Delete one slice of data older than the cutoff; True when none is left."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            done = self._delete_slice(cutoff_ns)
            if done.by_service:
                db.executemany(
                    "UPDATE services SET span_count = max(0, span_count - ?),"
                    " log_count = max(0, log_count - ?), point_count = max(0, point_count - ?)"
                    " WHERE name = ?",
                    [(c[0], c[1], c[2], service) for service, c in done.by_service.items()],
                )
                db.execute(
                    "DELETE FROM services WHERE span_count = 0 AND log_count = 0"
                    " AND point_count = 0"
                )
            recorded = self._recorded(done, cutoff_ns, reason) if done.removed else None
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if recorded is not None:
            # Only now: a reader that sees these counters sees the rows gone too, and a
            # rolled-back slice is never counted.
            self.evictions = recorded
            log.info(
                "evicted %d spans (%d traces), %d logs, %d metric points older than %s (%s)",
                done.spans, done.traces, done.logs, done.points,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff_ns / 1e9)), reason,
            )  # fmt: skip
        return done.done

    def _delete_slice(self, cutoff_ns: int) -> _Slice:
        db, limit = self.db, EVICT_SLICE_ROWS
        done = _Slice()
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
        for i in range(0, len(picked), 500):
            chunk = picked[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"DELETE FROM spans WHERE trace_id IN ({marks}) RETURNING service_name", chunk
            ).fetchall()
            done.spans += done.count(rows, 0)
            db.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", chunk)
        done.traces = len(picked)
        for table, slot in (("logs", 1), ("metric_points", 2)):
            rows = db.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE time_ns < ?"
                " ORDER BY time_ns LIMIT ?) RETURNING service_name",
                (cutoff_ns, limit),
            ).fetchall()
            n = done.count(rows, slot)
            if slot == 1:
                done.logs = n
            else:
                done.points = n
        db.execute("DELETE FROM red WHERE minute < ?", (cutoff_ns // MINUTE_NS,))
        scraped_left = False
        for table in ("prom_samples", "prom_exemplars", "prom_scrapes"):
            scraped_left |= _delete_older(db, table, cutoff_ns, limit)
        done.done = (
            len(picked) == len(candidates) < 1000
            and done.logs < limit
            and done.points < limit
            and not scraped_left
        )
        return done

    def _recorded(self, done: _Slice, cutoff_ns: int, reason: str) -> EvictionStats:
        """The counters with this slice added, saved in the slice's transaction."""
        ev = dataclasses.replace(
            self.evictions,
            spans=self.evictions.spans + done.spans,
            traces=self.evictions.traces + done.traces,
            logs=self.evictions.logs + done.logs,
            points=self.evictions.points + done.points,
            last_at=time.time(),
            last_reason=reason,
            last_cutoff_ns=cutoff_ns,
        )
        self._save(ev)
        return ev

    def clear(self) -> dict[str, int]:
        """Delete every row of telemetry; runs in the writer thread."""
        db = self.db
        spans, logs, points = db.execute(
            "SELECT coalesce(sum(span_count), 0), coalesce(sum(log_count), 0),"
            " coalesce(sum(point_count), 0) FROM services"
        ).fetchone()
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table}")
            cleared = EvictionStats(cleared_at=time.time())
            self._save(cleared)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.evictions = cleared
        self.reset()
        # Give the space back to the file system; readers may hold it up, which is harmless.
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.warning("cleared all telemetry (%d spans, %d logs, %d points)", spans, logs, points)
        return {"spans": spans, "logs": logs, "metric_points": points}


def _delete_older(db: sqlite3.Connection, table: str, cutoff_ns: int, limit: int) -> bool:
    """Delete about ``limit`` rows older than the cutoff from a table keyed by time_ns;
    True when older rows remain (the next slice continues)."""
    beyond = db.execute(
        f"SELECT time_ns FROM {table} WHERE time_ns < ? ORDER BY time_ns LIMIT 1 OFFSET ?",
        (cutoff_ns, limit),
    ).fetchone()
    (below,) = beyond or (cutoff_ns,)
    db.execute(f"DELETE FROM {table} WHERE time_ns < ?", (below,))
    return beyond is not None
