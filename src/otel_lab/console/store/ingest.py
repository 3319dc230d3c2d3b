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
import pickle
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_lab.console.otlp import Batch
from otel_lab.console.store.retention import Retention
from otel_lab.console.store.writer import StoreStats, Writer

log = logging.getLogger("otel_lab.console.store")

OPTIMIZE_EVERY_SECONDS = 300
# Past this many rows queued, batches wait packed and the writer unpacks a few at a time.
PACK_ABOVE_ROWS = 4096


class Command:
    """Work for the writer thread that must run in order with the queued batches."""

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
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


def _glibc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``; None where the C library is not glibc (nothing to do).

    Once a burst has drained, glibc keeps the memory its packed batches and decoded rows
    took in its arenas; ``malloc_trim(0)`` hands the free pages of every arena back. It
    costs a few ms, so it runs once per burst.
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
_STOP = object()


@dataclass
class _Packed:
    """A batch waiting in a backlog, pickled: one bytes object instead of a Python object
    per field of every row. A burst (a hung console resuming, the services' exporters
    sending what they held) queues tens of thousands of rows; decoded, they fill pymalloc
    arenas that a few survivors then pin for the process's life, so it stayed at the
    burst's high-water mark (docs/reliability.md, scripts/bench_console_memory.py
    --ingest-burst). Pickling costs about a third of decoding, paid only in a backlog."""

    rows: int
    data: bytes

    def unpack(self) -> Batch:
        batch: Batch = pickle.loads(self.data)
        return batch


@dataclass
class _Take:
    """What the writer took from the queue in one round."""

    batches: list[Batch] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    rows: int = 0
    stop: bool = False

    packed: bool = False

    def add(self, item: Batch | _Packed) -> None:
        if isinstance(item, _Packed):
            self.packed = True
            item = item.unpack()
        self.batches.append(item)
        self.rows += item.rows


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
        self.backlog = False  # batches were packed since memory was last given back
        self.packed_rows = 0
        self.closed = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
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
            backlog = self.pending > PACK_ABOVE_ROWS
            self.backlog |= backlog
        if backlog:
            self.packed_rows += rows  # (a statistic: read without the lock)
            self._queue.put(_Packed(rows, pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)))
        else:
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

    def call(self, fn: Callable[[sqlite3.Connection], Any], timeout: float) -> Any:
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
        """Once a backlog has drained, give the memory its rows took back to the system."""
        if self.backlog and self.pending == 0:
            self.backlog = False
            if _malloc_trim is not None:
                _malloc_trim()

    def _first(self) -> Any:
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
        while item is not None:
            if item is _STOP:
                take.stop = True
                break
            if isinstance(item, Command):
                take.commands.append(item)  # runs after the batches queued before it
                break
            take.add(item)
            limit = PACK_ABOVE_ROWS if take.packed else self.max_rows_per_transaction
            if take.rows >= limit:
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
            elif item is not _STOP:
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
