"""Does the console's writer need a large SQLite page cache? CPU per span by cache size.

Fills a store (in process: the real decoder and writer, no HTTP) with PREFILL spans of the
service chain and their logs, then writes 60,000 more spans at each writer cache size in
turn (repeats show the noise), and prints the CPU per span and what SQLite holds in memory
(``sqlite3_memory_used``, when the process's libsqlite3 can be loaded by name).

    .venv/bin/python scripts/bench_console_cache.py 400000 64000,16000,64000,16000,8000
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_lab.console import otlp
from otel_lab.console.store import Store
from tests.console.synthetic import MS, Generator


def sqlite_memory() -> float | None:
    """MiB SQLite has allocated in this process (its page caches, mostly)."""
    name = ctypes.util.find_library("sqlite3")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return float(lib.sqlite3_memory_used()) / 2**20


class Feed:
    """Chain traces, 40 per request as an SDK's batch exporter sends them, one after another."""

    def __init__(self) -> None:
        self.gen = Generator(seed=5)
        self.t = time.time_ns() - 3600 * 10**9

    def batches(self, spans: int) -> tuple[list[otlp.Batch], int]:
        out, n = [], 0
        while n < spans:
            o = self.gen.batch(40, self.t, spacing=5 * MS)
            self.t += 40 * 5 * MS
            out += [otlp.decode_traces(o.traces_request()), otlp.decode_logs(o.logs_request())]
            n += o.span_count
        return out, n


def write(store: Store, batches: list[otlp.Batch]) -> None:
    for batch in batches:
        while not store.submit(batch):
            time.sleep(0.01)
    store.flush(600)


def main() -> int:
    prefill = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    sizes = [int(k) for k in (sys.argv[2] if len(sys.argv) > 2 else "64000,16000").split(",")]
    feed = Feed()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "cache.db", max_pending_rows=500_000)
        batches, n = feed.batches(prefill)
        write(store, batches)
        print(f"prefilled {n:,} spans; SQLite holds {sqlite_memory() or 0:.1f} MiB")
        for kib in sizes:
            store.call(lambda db, kib=kib: db.execute(f"PRAGMA cache_size=-{kib}"))
            store.call(lambda db: db.execute("PRAGMA shrink_memory"))
            batches, n = feed.batches(60_000)
            cpu, wall = time.process_time(), time.perf_counter()
            write(store, batches)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"writer cache {kib / 1024:5.1f} MiB: {n:,} spans, {cpu / n * 1e6:5.1f} us CPU "
                  f"per span, {wall:5.1f} s, SQLite holds {sqlite_memory() or 0:5.1f} MiB",
                  flush=True)  # fmt: skip
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
