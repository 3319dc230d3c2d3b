"""What the console keeps in memory stays bounded however long it runs."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from otel_lab.console.store import Store
from otel_lab.console.store.readers import Readers
from tests.console.conftest import start_console
from tests.console.synthetic import Generator

MiB = 2**20


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
        # In WAL mode, as the console's writer leaves its store: eight readers switching a
        # rollback-journal file to WAL at once can get "database is locked" (CI, 02:27).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE pad (x BLOB)")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24000) "
            "INSERT INTO pad SELECT randomblob(1000) FROM n"
        )
    readers = Readers(path)
    threads = 8
    ready, done = threading.Barrier(threads + 1), threading.Event()

    def request() -> None:
        try:
            readers.reader().execute("SELECT count(*) FROM pad WHERE x > x'00'").fetchone()
        except BaseException:
            ready.abort()  # the test fails with the error instead of waiting for this thread
            raise
        ready.wait()
        done.wait()

    process = psutil.Process()
    before = process.memory_full_info().uss
    workers = [threading.Thread(target=request) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        ready.wait(timeout=60)  # every thread has read the whole store and holds its cache
        grown = process.memory_full_info().uss - before
    except BaseException:
        ready.abort()  # releases the threads still waiting at the barrier
        raise
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=10)
        readers.close()
    # Eight full 16 MB caches would be 122 MiB; the bound is 2 MB each, 15 MiB together,
    # plus the threads' stacks and SQLite's per-connection state.
    assert grown < 32 * 2**20, f"{grown / 2**20:.0f} MiB for {threads} readers"


def test_an_ingest_burst_leaves_the_console_near_its_level_once_written(tmp_path: Path) -> None:
    """The soak's SIGCONT flush: a hung console resumes and seven services' exporters send
    the 4,096 spans each held, 2,048 per request, one request at a time each. Once it is
    written the console must come back near where it was, not stay at the burst's
    high-water mark: decoded one request at a time (a thread pool had several requests'
    rows alive at once) and glibc's free pages given back (malloc_trim) after it. Before
    that the console's USS stayed 60-65 MiB above its level after such a burst (SQLite's
    page caches filling as the store grows are about 18 of those, and stay: they are
    bounded, store/schema.py); now 35-42 (scripts/bench_console_memory.py --ingest-burst).
    This test's burst (28,000 spans): 52-53 MiB before, 28-30 now."""
    console = start_console(tmp_path / "burst.db")
    try:
        process = psutil.Process(console.process.pid)
        generator = Generator(seed=21)
        trickle = generator.batch(30, time.time_ns()).traces_request().SerializeToString()
        for _ in range(5):  # warm: the imports and first allocations of each path
            assert console.post("/v1/traces", trickle, "application/x-protobuf").is_success
        console.wait_for(lambda: console.api("/api/stats").json()["pending_rows"] == 0)
        before = process.memory_full_info().uss
        bodies = []
        for _ in range(14):
            out = generator.batch(200, time.time_ns(), spacing=1_000_000)
            bodies.append(out.traces_request().SerializeToString())
        spans = 0

        def exporter(share: list[bytes]) -> None:
            with httpx.Client(timeout=30) as client:
                for body in share:
                    r = client.post(
                        console.otlp_url + "/v1/traces",
                        content=body,
                        headers={"content-type": "application/x-protobuf"},
                    )
                    assert r.status_code == 200, r.text  # absorbed, not refused

        with ThreadPoolExecutor(7) as pool:
            list(pool.map(exporter, [bodies[i::7] for i in range(7)]))
        stats = console.wait_for(
            lambda: (s := console.api("/api/stats").json())["pending_rows"] == 0 and s
        )
        spans = stats["written"]["spans"]
        assert spans >= 14 * 2000 and stats["rows_refused"] == 0  # nothing acknowledged lost
        time.sleep(1)
        grown = (process.memory_full_info().uss - before) / MiB
    finally:
        assert console.stop() == 0
    assert grown < 42, f"USS {grown:.0f} MiB above its level after a {spans}-span burst"
