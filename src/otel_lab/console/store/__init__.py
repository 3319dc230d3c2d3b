"""SQLite storage for the console: one file, WAL mode, one writer thread, many readers.

The parts: :mod:`.schema` (tables, connections, statements), :mod:`.ingest` (the bounded
queue and the writer thread), :mod:`.writer` (batches into one transaction each),
:mod:`.summaries` (traces, services, operations and RED kept by the writer),
:mod:`.retention` (eviction by age and size, clear-all) and :mod:`.readers` (the API's
connections). :class:`Store` puts them together.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from otel_lab.console.otlp import Batch
from otel_lab.console.store.ingest import IngestQueue
from otel_lab.console.store.readers import Readers
from otel_lab.console.store.retention import EvictionStats, Retention, used_bytes
from otel_lab.console.store.schema import open_writer
from otel_lab.console.store.summaries import MINUTE_NS, hist_bounds, hist_bucket
from otel_lab.console.store.writer import StoreStats, Writer

__all__ = ["MINUTE_NS", "EvictionStats", "Store", "StoreStats", "hist_bounds", "hist_bucket"]

log = logging.getLogger("otel_lab.console.store")
T = TypeVar("T")


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
        self.stats = StoreStats()
        # Bumped by clear(): the scraper then forgets its series ids and last values.
        self.clear_generation = 0
        self._db = open_writer(self.path)
        self._readers = Readers(self.path)
        self._writer = Writer(self._db, self.stats)
        self._retention = Retention(
            self._db,
            int(retention_seconds * 1e9) if retention_seconds else None,
            max_db_bytes or None,
            housekeeping_interval,
        )
        self._ingest = IngestQueue(
            self._db,
            self._writer,
            self._retention,
            self.stats,
            max_pending_rows=max_pending_rows,
            max_rows_per_transaction=max_rows_per_transaction,
        )

    # ------------------------------------------------------------------ settings and state

    @property
    def retention_ns(self) -> int | None:
        return self._retention.retention_ns

    @property
    def max_db_bytes(self) -> int | None:
        return self._retention.max_db_bytes

    @property
    def max_pending_rows(self) -> int:
        return self._ingest.max_pending_rows

    @property
    def evictions(self) -> EvictionStats:
        return self._retention.evictions

    @property
    def healthy(self) -> bool:
        return not self._ingest.closed and self._ingest.alive

    @property
    def pending_rows(self) -> int:
        return self._ingest.pending

    def disk_bytes(self) -> dict[str, int]:
        """Sizes of the database file and its WAL (what the size cap is compared with)."""
        sizes = {}
        for name, suffix in (("db", ""), ("wal", "-wal")):
            try:
                sizes[name] = Path(f"{self.path}{suffix}").stat().st_size
            except OSError:
                sizes[name] = 0
        return sizes

    def used_bytes(self, db: sqlite3.Connection | None = None) -> int:
        """Bytes in use inside the database file (free pages are reused before it grows)."""
        return used_bytes(db or self._db)

    # ------------------------------------------------------------------ reading

    @property
    def read_connections(self) -> int:
        """API threads' read connections open now (each closes when its thread ends)."""
        return self._readers.open_count

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (API handlers run in a thread pool)."""
        return self._readers.reader()

    def open_reader(self) -> sqlite3.Connection:
        """A private read connection (for a streaming export); the caller closes it."""
        return self._readers.open()

    def snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read transaction, so several queries see one consistent state."""
        return self._readers.snapshot()

    # ------------------------------------------------------------------ writing

    def submit(self, batch: Batch) -> bool:
        """Queue a batch for the writer; False (and nothing queued) when the queue is full."""
        return self._ingest.submit(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (for tests and benchmarks)."""
        return self._ingest.flush(timeout)

    def call(self, fn: Callable[[sqlite3.Connection], T], timeout: float = 120.0) -> T:
        """Run ``fn(db)`` in the writer thread after the batches queued so far; its result."""
        return self._ingest.call(fn, timeout)

    def clear(self) -> dict[str, int]:
        """Delete all telemetry (in the writer thread, after what is already queued)."""
        return self.call(self._clear)

    def _clear(self, _db: sqlite3.Connection) -> dict[str, int]:
        cleared = self._retention.clear()
        self.clear_generation += 1
        self._writer.forget()
        self._writer.red_routes.clear()
        return cleared

    def close(self) -> None:
        """Commit what is queued, stop the writer, checkpoint the WAL and close everything."""
        if self._ingest.closed:
            return
        self._ingest.stop()
        self._readers.close()
        try:
            self._db.execute("PRAGMA optimize")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # pragma: no cover
            log.warning("WAL checkpoint at close failed: %s", exc)
        self._db.close()
