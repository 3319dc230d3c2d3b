"""The ingest queue and the writer thread that drains it.

Receivers must answer fast and never wait for the disk, so requests only decode and enqueue;
one writer thread takes everything queued (up to a cap), commits it at once, and between
commits runs one slice of housekeeping. The queue is bounded in rows: when it is full the
receiver answers 503 + Retry-After and exporters retry later, instead of this process
growing without limit. Everything that changes data runs in this thread: ingest, RED,
eviction, and commands such as clear-all, queued behind the batches already accepted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from otel_lab.console.otlp import Batch
from otel_lab.console.store.retention import Retention
from otel_lab.console.store.writer import StoreStats, Writer

log = logging.getLogger("otel_lab.console.store")

OPTIMIZE_EVERY_SECONDS = 300
# A backlog at least this deep (rows queued at once) is a burst to give memory back after.
TRIM_AFTER_ROWS = 10_000


def _glibc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``; None where the C library is not glibc (nothing to do).

    After a burst (a hung console resuming while the services' exporters send what they
    held) glibc keeps the memory its rows took in its arenas, so the process stayed at the
    burst's high-water mark; ``malloc_trim(0)`` hands the free pages of every arena back
    (0.4-12 MiB after a 30,000-span burst, in 0.3-30 ms: docs/reliability.md). Run once a
    burst has drained, not after every commit.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (ValueError, OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_malloc_trim = _glibc_malloc_trim()


T = TypeVar("T")


class Command(Generic[T]):
    """Work for the writer thread that must run in order with the queued batches."""

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: T  # set by run() unless it fails
        self.error: BaseException | None = None

    def run(self, db: sqlite3.Connection) -> None:
        try:
            self.result = self.fn(db)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def refuse(self) -> None:
        self.error = RuntimeError("store is closing")
        self.done.set()


class _Stop:
    """The queue's end marker."""


_STOP = _Stop()


@dataclass
class _Take:
    """What the writer took from the queue in one round."""

    batches: list[Batch] = field(default_factory=list)
    commands: list[Command[Any]] = field(default_factory=list)
    rows: int = 0
    stop: bool = False

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.rows += batch.rows


class IngestQueue:
    """Bounded (in rows) queue of batches and commands, drained by one writer thread."""

    def __init__(
        self,
        db: sqlite3.Connection,
        writer: Writer,
        retention: Retention,
        stats: StoreStats,
        *,
        max_pending_rows: int,
        max_rows_per_transaction: int,
    ) -> None:
        self.db = db
        self.writer = writer
        self.retention = retention
        self.stats = stats
        self.max_pending_rows = max_pending_rows
        self.max_rows_per_transaction = max_rows_per_transaction
        self.pending = 0
        self.backlog = 0  # the most rows queued at once since memory was last given back
        self.closed = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: queue.SimpleQueue[Batch | Command[Any] | _Stop] = queue.SimpleQueue()
        self._optimized_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="console-store-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, batch: Batch) -> bool:
        """Queue a batch for the writer; False (and nothing queued) when the queue is full."""
        rows = batch.rows
        if rows == 0 and not batch.resources:
            return True
        with self._lock:
            if self.closed or self.pending + rows > self.max_pending_rows:
                self.stats.rows_refused += rows
                return False
            self.pending += rows
        self._queue.put(batch)
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is committed."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def call(self, fn: Callable[[sqlite3.Connection], T], timeout: float) -> T:
        """Run ``fn(db)`` in the writer thread after the batches queued so far."""
        if self.closed:
            raise RuntimeError("store is closed")
        command = Command(fn)
        self._queue.put(command)
        if not command.done.wait(timeout):
            raise TimeoutError("the store's writer did not answer in time")
        if command.error is not None:
            raise command.error
        return command.result

    def stop(self, timeout: float = 30) -> None:
        """Refuse new batches, let the writer commit what is queued, and wait for it."""
        with self._lock:
            self.closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=timeout)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        """Take everything that is queued (up to a cap), commit it at once; between
        commits, do one slice of housekeeping (eviction)."""
        while True:
            take = self._take()
            if take.stop:
                self._drain(take)
            self._commit(take)
            for command in take.commands:
                command.run(self.db)
            if take.stop:
                return
            self._release_after_burst()
            self._housekeep()

    def _release_after_burst(self) -> None:
        """Once a burst has drained, give the memory its rows took back to the system."""
        if self.pending == 0 and self.backlog >= TRIM_AFTER_ROWS:
            self.backlog = 0
            if _malloc_trim is not None:
                _malloc_trim()

    def _first(self) -> Batch | Command[Any] | _Stop | None:
        try:
            if self.retention.plan is not None:
                return self._queue.get_nowait()  # eviction pending: do not sleep
            wait = max(0.01, self.retention.next_check - time.monotonic())
            return self._queue.get(timeout=min(wait, self.retention.interval))
        except queue.Empty:
            return None

    def _take(self) -> _Take:
        take = _Take()
        item = self._first()
        self.backlog = max(self.backlog, self.pending)
        while item is not None:
            if isinstance(item, _Stop):
                take.stop = True
                break
            if isinstance(item, Command):
                take.commands.append(item)  # runs after the batches queued before it
                break
            take.add(item)
            if take.rows >= self.max_rows_per_transaction:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return take

    def _drain(self, take: _Take) -> None:
        """At stop: write whatever arrived before the stop marker; refuse commands."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Command):
                item.refuse()
            elif not isinstance(item, _Stop):
                take.add(item)

    def _commit(self, take: _Take) -> None:
        if not take.batches:
            return
        try:
            self.writer.write_or_isolate(take.batches)
            if time.monotonic() - self._optimized_at > OPTIMIZE_EVERY_SECONDS:
                # Refresh planner statistics now and then (bounded work: analysis_limit).
                self._optimized_at = time.monotonic()
                self.db.execute("PRAGMA optimize")
        except Exception:  # the writer must survive anything
            log.exception("console store: unexpected writer error")
        finally:
            with self._idle:
                self.pending -= take.rows
                if self.pending <= 0:
                    self._idle.notify_all()

    def _housekeep(self) -> None:
        try:
            self.retention.housekeep()
        except Exception:
            self.retention.plan = None
            with contextlib.suppress(sqlite3.Error):
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            log.exception("console store: eviction failed; retrying later")
