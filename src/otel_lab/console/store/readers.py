"""Read connections: one per API thread (handlers run in a thread pool), query-only.

A thread's connection is closed when the thread ends. The pool's threads come and go:
anyio ends a worker thread that has been idle for 10 s, so each burst of concurrent
requests (a page loading its panels at once) starts new threads; kept open for the
console's life, their connections (each with a page cache of up to 16 MB and its file
descriptors) added up without bound.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from otel_lab.console.store.schema import connect

# SQLite's page cache of each API thread's connection. There are up to 40 such threads
# (anyio's pool), so the caches together may hold 40 times this.
READER_CACHE_KIB = 2000


class _Held:
    """A thread's connection, in its thread-local storage: freed with the thread."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class Readers:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.closed = False
        self._local = threading.local()
        self._open: set[sqlite3.Connection] = set()
        self._lock = threading.Lock()

    @property
    def open_count(self) -> int:
        """Threads' connections open now (at most the number of live API threads)."""
        with self._lock:
            return len(self._open)

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            conn = self.open()
            conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            held = self._local.held = _Held(conn)
            with self._lock:
                self._open.add(conn)
            weakref.finalize(held, self._release, conn)
        return held.conn

    def _release(self, conn: sqlite3.Connection) -> None:
        """Close a connection whose thread ended (the thread's locals are gone)."""
        with self._lock:
            self._open.discard(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

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
            for conn in self._open:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._open.clear()
