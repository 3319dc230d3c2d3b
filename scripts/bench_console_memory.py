"""Does the console's memory level off under steady ingest? Prints its RSS every 15 s.

A console on a fresh store receives batches of 40 realistic spans (the service chain) as
fast as it acknowledges them, with a trace search after each, for DURATION seconds. Its
RSS should rise while SQLite's page caches fill (16 MiB for the writer, 16 MiB per API
reader thread, store/schema.py) and then stay flat however many spans arrive.

    .venv/bin/python scripts/bench_console_memory.py 300
    .venv/bin/python scripts/bench_console_memory.py --bursts 5

``--ingest-burst [SPANS]``: the SIGCONT flush of the soak. A console receives a steady
trickle (the services' exports, every second) for WARM seconds (default 30), then SPANS
spans (default 60,000, with their logs) in 2,048-span requests from EXPORTERS threads
(default 7, one request at a time each, as the services' batch processors send what they
held when a hung console resumes), then the trickle again for AFTER seconds (default 60).
It prints how long each burst request waited for its answer (p50, p95, max, and how many
past the services' 2 s export deadline) and, at the end, the spans stored.
Every 2 s it prints the console's PSS/USS and, from a sampler thread inside it, what holds
the memory: Python's objects (pymalloc's arenas and the blocks in use), glibc's heap (in
use and free), SQLite's own allocations (its page caches), and the rows in the queue.

``CPU_SHARE=0.2`` (with ``--ingest-burst``) emulates a loaded host for the burst and after:
the console is stopped (SIGSTOP) for 1 - CPU_SHARE of every 100 ms, as if it got that share
of a CPU (the soak's load average of 13 on two cores is about 0.15), without burning CPU.

``--bursts N``: N bursts of 16 concurrent API requests, each followed by 11 s idle and one
request (which makes anyio end the pool's threads idle for 10 s); prints how many
connections to the store the console holds open (its file descriptors on the file) after
each. They should not add up burst after burst.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_console import PROTOBUF, SECOND, ConsoleProcess, Generator

from otel_lab.telemetry.exporters import DEFAULT_EXPORT_TIMEOUT_SECONDS as EXPORT_TIMEOUT_S
from tests.console.synthetic import MS

MiB = 2**20


def _sampler(path: str, every: float) -> None:
    """In the console: one JSON line of allocator figures every ``every`` s."""
    import ctypes
    import gc
    import json
    import re
    import threading

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64

    def pymalloc() -> tuple[int, int]:
        """(bytes in pymalloc's arenas, bytes in blocks in use), from _debugmallocstats."""
        with tempfile.TemporaryFile("w+") as out:
            saved = os.dup(2)
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            out.seek(0)
            text = out.read()
        if "# arenas allocated current" not in text:
            return 0, 0  # tracemalloc hooks the allocator: pymalloc's statistics are not shown
        num = lambda label: int(re.search(label + r"\s*=\s*([\d,]+)", text)[1].replace(",", ""))  # noqa: E731
        return num("# arenas allocated current") * MiB, num("# bytes in allocated blocks")

    def run() -> None:
        with open(path, "a") as log:
            while True:
                arenas, blocks = pymalloc()
                m = libc.mallinfo2()
                line = {
                    "t": time.time(), "py_arenas": arenas, "py_blocks": blocks,
                    "heap": m.arena + m.hblkhd, "heap_used": m.uordblks + m.hblkhd,
                    "heap_free": m.fordblks, "sqlite": sqlite.sqlite3_memory_used(),
                    "gc": gc.get_count(),
                }  # fmt: skip
                log.write(json.dumps(line) + "\n")
                log.flush()
                time.sleep(every)

    threading.Thread(target=run, name="bench-sampler", daemon=True).start()


def _last_sample(path: Path) -> dict[str, float]:
    import json

    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def _answered(took: float, answers: list[tuple[int, float]]) -> str:
    """The burst's statuses and how long each request waited for its answer."""
    codes = [c for c, _ in answers]
    waits = sorted(w for _, w in answers)
    late = sum(w > EXPORT_TIMEOUT_S for w in waits)
    return (
        f"burst answered in {took:.1f} s: {sorted(set(codes))} ({codes.count(503)} x 503); "
        f"per request p50 {waits[len(waits) // 2]:.2f} s, p95 "
        f"{waits[int(len(waits) * 0.95)]:.2f} s, max {waits[-1]:.2f} s, {late} of {len(waits)} "
        f"over the services' {EXPORT_TIMEOUT_S:.0f} s export timeout"
    )


@contextmanager
def throttled(pid: int, share: float, period: float = 0.1) -> Iterator[None]:
    """The process runs ``share`` of every ``period`` and is stopped for the rest."""
    if share >= 1:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(period * (1 - share))
            os.kill(pid, signal.SIGCONT)
            time.sleep(period * share)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        os.kill(pid, signal.SIGCONT)


def ingest_burst(spans: int, warm: float, after: float, extra: list[str]) -> None:
    """The soak's SIGCONT flush, reproduced on a console of its own (see the docstring)."""
    generator = Generator(seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples.jsonl"
        console = ConsoleProcess(
            Path(tmp) / "burst.db", *extra, run=(__file__, "--console-child", str(samples))
        )
        process = psutil.Process(console.proc.pid)
        started = time.monotonic()
        client = httpx.Client(timeout=60)

        def post(path: str, body: bytes) -> int:
            return client.post(f"{console.otlp}{path}", content=body, headers=PROTOBUF).status_code

        def trickle(traces: int = 30) -> None:
            """What the services send in a second at a soak's rate (about 300 spans)."""
            out = generator.batch(traces, time.time_ns() - SECOND, spacing=SECOND // traces)
            post("/v1/traces", out.traces_request().SerializeToString())
            post("/v1/logs", out.logs_request().SerializeToString())

        def report(phase: str) -> None:
            mem = process.memory_full_info()
            s = _last_sample(samples)
            pending = client.get(f"{console.ui}/api/stats").json()["pending_rows"]
            print(f"{time.monotonic() - started:5.0f} s {phase:6} PSS {mem.pss / MiB:6.1f} "
                  f"USS {mem.uss / MiB:6.1f}  pymalloc {s.get('py_arenas', 0) / MiB:5.1f} "
                  f"(blocks {s.get('py_blocks', 0) / MiB:5.1f})  glibc heap "
                  f"{s.get('heap', 0) / MiB:5.1f} (used {s.get('heap_used', 0) / MiB:5.1f}, "
                  f"free {s.get('heap_free', 0) / MiB:5.1f})  sqlite "
                  f"{s.get('sqlite', 0) / MiB:5.1f}  pending {pending:>6,}")  # fmt: skip

        def steady(seconds: float, phase: str) -> None:
            end, next_report = time.monotonic() + seconds, 0.0
            while time.monotonic() < end:
                trickle()
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + 2
                    report(phase)
                time.sleep(1)

        steady(warm, "warm")
        per_request = 2048
        bodies = []
        while sum(n for n, _ in bodies) < spans:
            out = generator.batch(per_request // 10, time.time_ns() - 5 * SECOND, spacing=MS)
            bodies.append((out.span_count, out.traces_request().SerializeToString()))
            logs = out.logs_request().SerializeToString()
            bodies.append((0, logs))
        size = sum(len(b) for _, b in bodies) / MiB
        print(f"burst: {len(bodies)} requests, {sum(n for n, _ in bodies):,} spans "
              f"and their logs, {size:.0f} MiB")  # fmt: skip
        exporters = int(os.environ.get("EXPORTERS", 7))

        def export(share: list[tuple[int, bytes]]) -> list[tuple[int, float]]:
            """One service's exporters: one request at a time, as the SDK's batch processor;
            each request's status and the seconds until it was answered."""
            out = []
            for n, body in share:
                t0 = time.monotonic()
                code = post("/v1/logs" if n == 0 else "/v1/traces", body)
                out.append((code, time.monotonic() - t0))
            return out

        with throttled(console.proc.pid, float(os.environ.get("CPU_SHARE", 1))):
            t0 = time.monotonic()
            with ThreadPoolExecutor(exporters) as pool:
                shares = [bodies[i::exporters] for i in range(exporters)]
                answers = [a for share in pool.map(export, shares) for a in share]
            took = time.monotonic() - t0
            print(_answered(took, answers), flush=True)
            steady(after, "after")
        stored = client.get(f"{console.ui}/api/stats").json()["stored"]["spans"]
        print(f"spans stored {stored:,} (burst {sum(n for n, _ in bodies):,} and the trickle)")
        client.close()
        console.stop()


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
    if sys.argv[1:2] == ["--console-child"]:  # the console, with the sampler inside it
        import runpy

        _sampler(sys.argv[2], 1.0)
        sys.argv = ["otel_lab.console", *sys.argv[3:]]
        runpy.run_module("otel_lab.console", run_name="__main__")
        return 0
    if sys.argv[1:2] == ["--ingest-burst"]:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        spans = int(sys.argv[2]) if len(sys.argv) > 2 else 60_000
        ingest_burst(
            spans,
            warm=float(os.environ.get("WARM", 30)),
            after=float(os.environ.get("AFTER", 60)),
            extra=[],
        )
        return 0
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
