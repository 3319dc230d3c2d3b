"""Does the console's memory level off under steady ingest? Prints its RSS every 15 s.

A console on a fresh store receives batches of 40 realistic spans (the service chain) as
fast as it acknowledges them, with a trace search after each, for DURATION seconds. Its
RSS should rise while SQLite's page caches fill (16 MiB for the writer, 16 MiB per API
reader thread, store/schema.py) and then stay flat however many spans arrive.

    .venv/bin/python scripts/bench_console_memory.py 300
    .venv/bin/python scripts/bench_console_memory.py --bursts 5

``--bursts N``: N bursts of 16 concurrent API requests, each followed by 11 s idle and one
request (which makes anyio end the pool's threads idle for 10 s); prints how many
connections to the store the console holds open (its file descriptors on the file) after
each. They should not add up burst after burst.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_console import PROTOBUF, SECOND, ConsoleProcess, Generator


def bursts(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bursts.db"
        console = ConsoleProcess(db)
        fds = Path(f"/proc/{console.proc.pid}/fd")
        url = f"{console.ui}/api/traces?limit=5"
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
            for i in range(rounds):
                list(pool.map(lambda _: httpx.get(url, timeout=10).status_code, range(16)))
                time.sleep(11)
                client.get(f"{console.ui}/api/health")
                held = sum(os.readlink(fd) == str(db) for fd in fds.iterdir())
                print(f"burst {i + 1}: {held} connections open on the store", flush=True)
        console.stop()


def main() -> int:
    if sys.argv[1:2] == ["--bursts"]:
        bursts(int(sys.argv[2]) if len(sys.argv) > 2 else 5)
        return 0
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
