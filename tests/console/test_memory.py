"""What the console keeps in memory stays bounded however long it runs."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from otel_lab.console.store import Store


def _burst(store: Store, size: int) -> list[sqlite3.Connection]:
    """``size`` threads that each read at the same time, then end; their connections."""
    seen: list[sqlite3.Connection] = []
    ready = threading.Barrier(size + 1)
    done = threading.Event()

    def request() -> None:
        conn = store.reader()
        conn.execute("SELECT count(*) FROM spans").fetchone()
        seen.append(conn)
        ready.wait()
        done.wait()

    threads = [threading.Thread(target=request) for _ in range(size)]
    for thread in threads:
        thread.start()
    ready.wait()  # every thread holds its connection now
    try:
        assert store.read_connections == size
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return seen


def test_a_threads_read_connection_closes_when_the_thread_ends(tmp_path: Path) -> None:
    """The API's pool ends idle threads and starts new ones for the next burst of requests
    (anyio: after 10 s idle); each burst's connections must go with their threads, so the
    number open stays at the threads alive instead of adding up burst after burst."""
    store = Store(tmp_path / "readers.db")
    try:
        for _ in range(5):
            for conn in _burst(store, 8):
                with pytest.raises(sqlite3.ProgrammingError, match="closed"):
                    conn.execute("SELECT 1")
            assert store.read_connections == 0
        main = store.reader()  # a thread that lives on keeps its connection
        assert store.reader() is main
        assert store.read_connections == 1
    finally:
        store.close()
    assert store.read_connections == 0
