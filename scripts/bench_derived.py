"""What deriving the Collector's series costs the console (console.derived), incrementally and,
for comparison, at query time.

Fills a store (in process: the real decoder and writer, no HTTP) with PREFILL spans of the
service chain, then, ROUNDS times, writes one round's worth of new spans (ROUND_SPANS: the
spans a scrape interval brings, e.g. 10 s at 1,000 spans/s) and times ``Derived.collect``
(thread CPU and wall, per round and per span). The query-time alternative would aggregate the
dashboard's whole range of spans at every render: the same span-metrics and service-graph SQL
over the last hour of spans, timed once at the end.

    .venv/bin/python scripts/bench_derived.py 360000 10000 5
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_lab.console import derived
from otel_lab.console.scrape import _series_key
from otel_lab.console.store import Store
from scripts.bench_console_cache import Feed, write


def main() -> None:
    defaults = ["360000", "10000", "5"]
    args = [*sys.argv[1:4], *defaults[len(sys.argv[1:4]) :]]
    prefill, round_spans, rounds = (int(a) for a in args)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "console.db")
        feed = Feed()
        batches, n = feed.batches(prefill)
        write(store, batches)
        print(f"store: {n} spans")
        d = derived.Derived(store.open_reader, _series_key)
        d.collect(time.time_ns())  # start-up: counts from the next span on
        for i in range(rounds):
            batches, n = feed.batches(round_spans)
            write(store, batches)
            c0, w0 = time.thread_time(), time.perf_counter()
            samples = d.collect(time.time_ns())
            cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
            print(
                f"round {i + 1}: {n} new spans -> {len(samples)} series values;"
                f" collect {cpu * 1000:.1f} ms CPU ({wall * 1000:.1f} ms wall),"
                f" {cpu / n * 1e6:.2f} us CPU per span"
            )
        conn = store.open_reader()
        c0 = time.thread_time()
        top = conn.execute("SELECT max(rowid) FROM spans").fetchone()[0]
        rows = conn.execute(derived._SPANMETRICS_SQL, (0, top)).fetchall()
        pairs = conn.execute(derived._PAIRS_SQL, {"last": 0, "cur": top}).fetchall()
        cpu = time.thread_time() - c0
        print(
            f"query time (what each render would redo): span metrics + service graph over all"
            f" {top} spans: {cpu * 1000:.0f} ms CPU ({len(rows)} groups, {len(pairs)} pairs)"
        )
        conn.close()
        d.close()
        store.close()


if __name__ == "__main__":
    main()
