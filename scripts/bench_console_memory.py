"""Does the console's memory level off under steady ingest? Prints its RSS every 15 s.

A console on a fresh store receives batches of 40 realistic spans (the service chain) as
fast as it acknowledges them, with a trace search after each, for DURATION seconds. Its
RSS should rise while SQLite's page caches fill (64 MiB for the writer, 16 MiB per API
reader thread, store.py) and then stay flat however many spans arrive.

    .venv/bin/python scripts/bench_console_memory.py 300
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_console import PROTOBUF, SECOND, ConsoleProcess, Generator


def main() -> int:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    with tempfile.TemporaryDirectory() as tmp:
        console = ConsoleProcess(Path(tmp) / "memory.db")
        process = psutil.Process(console.proc.pid)
        generator = Generator(seed=3)
        started = time.monotonic()
        next_report = started
        with httpx.Client(timeout=30) as client:
            while time.monotonic() - started < duration:
                batch = generator.batch(40, time.time_ns() - 5 * SECOND, spacing=1_000_000)
                body = batch.traces_request().SerializeToString()
                client.post(f"{console.otlp}/v1/traces", content=body, headers=PROTOBUF)
                client.get(f"{console.ui}/api/traces", params={"service": "order-service"})
                if time.monotonic() >= next_report:
                    next_report += 15
                    spans = client.get(f"{console.ui}/api/stats").json()["stored"]["spans"]
                    rss = process.memory_info().rss / 2**20
                    print(f"{time.monotonic() - started:5.0f} s  RSS {rss:6.1f} MiB  "
                          f"{spans:>10,} spans stored", flush=True)  # fmt: skip
        console.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
