"""What the console keeps in memory stays bounded however long it runs."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psutil
import pytest

from otel_lab.console.store import Store
from otel_lab.console.store.readers import Readers


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


def test_the_api_threads_page_caches_are_bounded_together(tmp_path: Path) -> None:
    """Each API thread has a read connection, and each connection a page cache of its own;
    40 threads (anyio's pool) with 16 MB each could hold 640 MB. Eight threads that each
    read a 24 MB store through to the end, all holding their connections at once, add about
    their share of the bound (2 MB each) to the process, not 8 x 16 MB."""
    path = tmp_path / "big.db"
    with sqlite3.connect(path) as db:  # 24 MB of pages that a full scan reads
        db.execute("CREATE TABLE pad (x BLOB)")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24000) "
            "INSERT INTO pad SELECT randomblob(1000) FROM n"
        )
    readers = Readers(path)
    threads = 8
    ready, done = threading.Barrier(threads + 1), threading.Event()

    def request() -> None:
        readers.reader().execute("SELECT count(*) FROM pad WHERE x > x'00'").fetchone()
        ready.wait()
        done.wait()

    process = psutil.Process()
    before = process.memory_full_info().uss
    workers = [threading.Thread(target=request) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        ready.wait()  # every thread has read the whole store and holds its cache now
        grown = process.memory_full_info().uss - before
    finally:
        done.set()
        for worker in workers:
            worker.join()
        readers.close()
    # Eight full 16 MB caches would be 122 MiB; the bound is 2 MB each, 15 MiB together,
    # plus the threads' stacks and SQLite's per-connection state.
    assert grown < 32 * 2**20, f"{grown / 2**20:.0f} MiB for {threads} readers"


def test_a_backlog_waits_packed_and_every_row_is_written(tmp_path: Path) -> None:
    """A burst deeper than PACK_ABOVE_ROWS (a hung console resuming) waits as pickled bytes,
    not as a Python object per field of every row, and the writer unpacks a few thousand
    rows per transaction; every acknowledged row is stored all the same."""
    import time

    from otel_lab.console.otlp import decode_traces
    from otel_lab.console.store import ingest
    from tests.console.synthetic import Generator

    store = Store(tmp_path / "backlog.db")
    queue = store._ingest
    hold, holding = threading.Event(), threading.Event()

    def block(_db: sqlite3.Connection) -> None:
        holding.set()
        hold.wait(30)

    blocker = threading.Thread(target=store.call, args=(block,))
    blocker.start()
    try:
        assert holding.wait(10)  # the writer is busy: what follows queues up
        generator = Generator(seed=9)
        spans = 0
        while spans <= 3 * ingest.PACK_ABOVE_ROWS:
            out = generator.batch(100, time.time_ns())
            assert store.submit(decode_traces(out.traces_request()))
            spans += out.span_count
        # All but the first PACK_ABOVE_ROWS rows wait packed.
        assert queue.packed_rows >= spans - ingest.PACK_ABOVE_ROWS - 2500
        assert queue.backlog
    finally:
        hold.set()
        blocker.join()
    assert store.flush(30)
    assert not queue.backlog  # drained: memory given back (malloc_trim on glibc)
    with sqlite3.connect(tmp_path / "backlog.db") as db:
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == spans
    assert store.stats.transactions >= 3  # a few thousand rows each, not 20,000 at once
    store.close()
