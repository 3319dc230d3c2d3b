"""Read connections: one per API thread (handlers run in a thread pool), query-only."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from otel_lab.console.store.schema import connect


class Readers:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.closed = False
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.open()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def open(self) -> sqlite3.Connection:
        """A private read connection; the caller closes it."""
        if self.closed:
            raise RuntimeError("store is closed")
        return connect(self.path, readonly=True)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several queries see one consistent state."""
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self.closed = True
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
