"""How fast the telemetry console is: ingest, large stores, large traces. Prints figures.

1. **Ingest**: a console on a fresh store; pre-built OTLP/HTTP protobuf requests of about
   420 realistic spans (the gateway -> user -> order -> audit chain with attributes, events,
   errors) sent by client threads as fast as they are acknowledged: the spans/s committed
   at saturation and the acknowledgement latency (p50/p99), with a reader querying the API
   alongside. Then the same requests paced at 20,000 spans/s: the latency exporters see
   under a steady load the console keeps up with.
2. **A store of 1,000,000 spans** (plus logs and metric points), generated once into a
   cache folder and reused: server time (the ``Server-Timing`` header) to open a
   1,000-span trace, to list and search traces, and for the other views; disk bytes per
   span; the console's RSS after start and after the queries.
3. **A 10,000-span trace in Chromium** (if ``/usr/bin/chromium`` and Playwright exist):
   time from navigation to an interactive waterfall, and to collapse/expand it.

No assertions: the issue's targets are printed next to each figure.

    .venv/bin/python scripts/bench_console.py                 # everything (about 3-5 min)
    .venv/bin/python scripts/bench_console.py --spans 200000  # a smaller store
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from otel_lab.console import otlp
from otel_lab.console.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.console.synthetic import Generator  # test data, kept out of the package

READY = re.compile(r"OTLP/HTTP on (\S+), UI and API on (\S+),")
PROTOBUF = {"content-type": "application/x-protobuf"}
SECOND = 1_000_000_000
STORE_FORMAT = "v3"  # bump when the generated store's shape changes
CHROMIUM = "/usr/bin/chromium"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ConsoleProcess:
    """``python -m otel_lab.console`` on free ports; stopped with SIGTERM by its own pid."""

    def __init__(
        self, db: Path, *extra: str, run: tuple[str, ...] = ("-m", "otel_lab.console")
    ) -> None:
        self.log = db.with_suffix(".log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *run, "--otlp-port", "0", "--ui-port", "0",
             "--db", str(db), "--retention", "0", "--max-db-mb", "0", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = READY.search(line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"console did not start: {line!r}; see {self.log.name}")
        self.otlp, self.ui = match[1], match[2]
        self.ps = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def server_ms(response: httpx.Response) -> float:
    timing = response.headers.get("server-timing", "")
    match = re.search(r"dur=([\d.]+)", timing)
    return float(match[1]) if match else float("nan")


# --------------------------------------------------------------------------- 1. ingest


def bench_ingest(workdir: Path, requests: int, threads: int) -> None:
    print(f"\n== Ingest: {requests} OTLP/HTTP protobuf requests, {threads} client threads ==")
    gen = Generator(seed=11)
    now = time.time_ns()
    bodies, spans_total = [], 0
    for i in range(requests):
        out = gen.batch(40, now - 600 * SECOND + i * 40 * 10_000_000, spacing=10_000_000)
        bodies.append(out.traces_request().SerializeToString())
        spans_total += out.span_count
    print(f"prepared {spans_total:,} spans, {spans_total // requests} per request, "
          f"{sum(map(len, bodies)) / requests / 1024:.0f} KiB per request")  # fmt: skip
    console = ConsoleProcess(workdir / "ingest.db")
    latencies: list[float] = []
    refused = 0
    api_ms: list[float] = []
    lock = threading.Lock()
    stop_reader = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop_reader.is_set():
                t = time.perf_counter()
                client.get(f"{console.ui}/api/traces", params={"service": "order-service"})
                api_ms.append((time.perf_counter() - t) * 1000)
                time.sleep(0.05)

    def sender(part: list[bytes]) -> None:
        nonlocal refused
        with httpx.Client(timeout=30) as client:
            for body in part:
                while True:
                    t = time.perf_counter()
                    r = client.post(f"{console.otlp}/v1/traces", content=body, headers=PROTOBUF)
                    elapsed = (time.perf_counter() - t) * 1000
                    with lock:
                        latencies.append(elapsed)
                    if r.status_code == 503:
                        with lock:
                            refused += 1
                        time.sleep(0.2)
                        continue
                    break

    rss_peak = console.rss_mb()
    started = time.perf_counter()
    workers = [threading.Thread(target=sender, args=(bodies[i::threads],)) for i in range(threads)]
    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    for w in workers:
        w.start()
    with httpx.Client(timeout=30) as client:
        while True:
            written = client.get(f"{console.ui}/api/stats").json()["written"]["spans"]
            rss_peak = max(rss_peak, console.rss_mb())
            if written >= spans_total:
                break
            time.sleep(0.1)
    elapsed = time.perf_counter() - started
    stop_reader.set()
    for w in workers:
        w.join()
    reader_thread.join()
    print(f"sustained ingest: {spans_total / elapsed:,.0f} spans/s committed "
          f"({spans_total:,} spans in {elapsed:.1f} s; target >= 20,000)")  # fmt: skip
    print(f"ack latency: p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms "
          f"(target p99 < 50 ms); 503 answers: {refused}")  # fmt: skip
    print(f"API during ingest (/api/traces?service=...): p50 {pct(api_ms, 0.5):.0f} ms, "
          f"p95 {pct(api_ms, 0.95):.0f} ms over {len(api_ms)} queries")  # fmt: skip
    print(
        f"console RSS peak during ingest: {rss_peak:.0f} MB; load average {os.getloadavg()[0]:.1f}"
    )
    console.stop()


def bench_paced(workdir: Path, rate: int, seconds: float, threads: int) -> None:
    """Send at a fixed span rate and measure the acknowledgements: the latency an exporter
    sees while the console keeps up with a steady load (rather than at saturation)."""
    print(f"\n== Paced ingest: {rate:,} spans/s for {seconds:.0f} s ==")
    gen = Generator(seed=12)
    now = time.time_ns()
    bodies, sizes = [], []
    while sum(sizes) < rate * seconds:
        out = gen.batch(40, now - 600 * SECOND + len(bodies) * 400_000_000, spacing=10_000_000)
        bodies.append(out.traces_request().SerializeToString())
        sizes.append(out.span_count)
    interval = sum(sizes) / len(sizes) / rate  # seconds between requests
    console = ConsoleProcess(workdir / "paced.db")
    latencies: list[float] = []
    late: list[float] = []
    next_index = 0
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def sender() -> None:
        nonlocal next_index
        with httpx.Client(timeout=30) as client:
            while True:
                with lock:
                    i = next_index
                    next_index += 1
                if i >= len(bodies):
                    return
                due = start + i * interval
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                sent = time.perf_counter()
                client.post(f"{console.otlp}/v1/traces", content=bodies[i], headers=PROTOBUF)
                done = time.perf_counter()
                with lock:
                    latencies.append((done - sent) * 1000)
                    late.append(max(0.0, (sent - due) * 1000))

    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    total = sum(sizes)
    with httpx.Client(timeout=30) as client:
        while client.get(f"{console.ui}/api/stats").json()["written"]["spans"] < total:
            time.sleep(0.05)
    committed = time.perf_counter() - start
    print(f"sent {total:,} spans in {elapsed:.1f} s ({total / elapsed:,.0f} spans/s), all "
          f"committed after {committed:.1f} s")  # fmt: skip
    print(f"ack latency: p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
          f"max {max(latencies):.1f} ms (target p99 < 50 ms); sends behind schedule: "
          f"p99 {pct(late, 0.99):.1f} ms")  # fmt: skip
    print(f"console RSS: {console.rss_mb():.0f} MB")
    console.stop()


# --------------------------------------------------------------------------- 2. big store


def generate_store(path: Path, spans: int) -> None:
    """Fill a store through the real decoder and writer (in process, no HTTP): chain
    traces spread over the last 20 hours, 20 traces of 1,000 spans among them, their
    logs, and request-duration/request-count/cache metrics with exemplars."""
    print(f"generating a store of {spans:,} spans into {path} (once; reused later) ...")
    started = time.perf_counter()
    store = Store(path, max_pending_rows=200_000)

    def submit(batch: otlp.Batch) -> None:
        while not store.submit(batch):
            time.sleep(0.05)

    gen = Generator(seed=5)
    now = time.time_ns()
    span_window = 20 * 3600 * SECOND
    big_count, big_size = 20, 1000
    chain_spans = spans - big_count * big_size
    traces = int(chain_spans / 12.3)  # a chain trace averages about 12.3 spans
    spacing = span_window // max(traces, 1)
    big_ids: list[str] = []
    exemplars: list[tuple[str, str]] = []
    written = 0
    t = now - span_window
    while written < chain_spans:
        out = gen.batch(400, t, spacing=spacing)  # about 5,000 spans per request
        t += 400 * spacing
        submit(otlp.decode_traces(out.traces_request()))
        submit(otlp.decode_logs(out.logs_request()))
        written += out.span_count
        if len(exemplars) < 50:
            root = out.spans["gateway"][0]
            exemplars.append((root.trace_id.hex(), root.span_id.hex()))
        if len(big_ids) < big_count and written >= len(big_ids) * chain_spans / big_count:
            big = gen.big_trace(big_size, t)
            big_ids += big.trace_ids
            submit(otlp.decode_traces(big.traces_request()))
            submit(otlp.decode_logs(big.logs_request()))
        if written // 100_000 != (written - out.span_count) // 100_000:
            print(f"  {written:,} spans ({time.perf_counter() - started:.0f} s)", flush=True)
    while len(big_ids) < big_count:
        big = gen.big_trace(big_size, t)
        big_ids += big.trace_ids
        submit(otlp.decode_traces(big.traces_request()))
    submit(otlp.decode_metrics(gen.metrics(now - span_window, 2000, exemplars, 36 * SECOND)))
    store.flush(600)
    store.close()
    (path.parent / "store.info").write_text(f"{STORE_FORMAT} {spans}\n" + "\n".join(big_ids) + "\n")
    print(f"generated in {time.perf_counter() - started:.0f} s")


def bench_store(cache: Path, spans: int, regenerate: bool, browser: bool) -> None:
    print(f"\n== A store of {spans:,} spans ==")
    folder = cache / f"store-{spans}"
    db = folder / "telemetry.db"
    info = folder / "store.info"
    if (
        regenerate
        or not info.exists()
        or not info.read_text().startswith(f"{STORE_FORMAT} {spans}")
    ):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        generate_store(db, spans)
    big_ids = [line for line in info.read_text().splitlines()[1:] if line]
    console = ConsoleProcess(db)
    rss_start = console.rss_mb()
    client = httpx.Client(timeout=60)
    ui = console.ui
    stats = client.get(f"{ui}/api/stats").json()
    stored = stats["stored"]
    disk = stats["disk"]["db_bytes"] + stats["disk"]["wal_bytes"]
    print(f"stored: {stored['spans']:,} spans, {stored['logs']:,} logs, "
          f"{stored['metric_points']:,} metric points; file {disk / 2**20:.0f} MB")  # fmt: skip
    print(f"disk per span: {disk / stored['spans']:.0f} bytes (everything in the file, logs "
          f"and metrics included, divided by spans; target <= 1024)")  # fmt: skip

    def measure(label: str, make: Callable[[int], tuple[str, dict[str, Any]]], n: int,
                target: str, warm: bool) -> None:  # fmt: skip
        times, sizes = [], []
        for i in range(3 if warm else n):
            path, params = make(i)
            r = client.get(ui + path, params=params)
            if r.status_code != 200:
                print(f"  {label}: HTTP {r.status_code} {r.text[:200]}")
                return
            times.append(server_ms(r))
            sizes.append(len(r.content))
        if not warm:
            print(f"  {label:<44} p50 {pct(times, 0.5):7.1f} ms  p95 {pct(times, 0.95):7.1f} ms"
                  f"  {statistics.mean(sizes) / 1024:6.0f} KiB  {target}")  # fmt: skip

    rnd = random.Random(1)
    services = [s["name"] for s in client.get(f"{ui}/api/services").json()["services"]]
    recent = client.get(f"{ui}/api/traces", params={"limit": 1000}).json()["traces"]
    hour_ago = str(time.time_ns() - 3600 * SECOND)
    list_target = "target < 200 ms"
    cases: list[tuple[str, Callable[[int], tuple[str, dict[str, Any]]], int, str]] = [
        ("open a 1,000-span trace (/api/traces/{id})",
         lambda i: (f"/api/traces/{big_ids[i % len(big_ids)]}", {}), 40, "target p95 < 50 ms"),
        ("  the same as waterfall rows (/waterfall)",
         lambda i: (f"/api/traces/{big_ids[i % len(big_ids)]}/waterfall", {}), 40, ""),
        ("open a chain trace (about 12 spans)",
         lambda i: (f"/api/traces/{rnd.choice(recent)['trace_id']}", {}), 40, ""),
        ("trace list, newest 20", lambda i: ("/api/traces", {}), 30, list_target),
        ("trace list, 100 slowest (order=duration)",
         lambda i: ("/api/traces", {"limit": 100, "order": "duration"}), 20, list_target),
        ("search service=X (each service in turn)",
         lambda i: ("/api/traces", {"service": services[i % len(services)]}), 30, list_target),
        ("search service + span name",
         lambda i: ("/api/traces", {"service": "order-service", "name": "price order"}), 20,
         list_target),
        ("search status=error, 50",
         lambda i: ("/api/traces", {"status": "error", "limit": 50}), 20, list_target),
        ("search attr http.response.status_code=500",
         lambda i: ("/api/traces", {"attr": "http.response.status_code=500"}), 20, list_target),
        ("search min_duration_ms=200, last hour",
         lambda i: ("/api/traces", {"min_duration_ms": 200, "since": hour_ago}), 20, list_target),
        ("trace list page (HTML)", lambda i: ("/", {}), 20, ""),
        ("logs: text search q=slow", lambda i: ("/api/logs", {"q": "slow"}), 10, ""),
        ("logs: one service, WARN and above",
         lambda i: ("/api/logs", {"service": "user-service", "severity": "WARN"}), 20, ""),
        ("RED: all services, last hour", lambda i: ("/api/red", {"window": "1h"}), 20, ""),
        ("RED: one service by route, last 24 h",
         lambda i: ("/api/red", {"window": "24h", "service": "gateway"}), 10, ""),
        ("service map, last 15 min", lambda i: ("/api/service-map", {"window": "15m"}), 10, ""),
        ("service map, last hour (5,000-trace cap)",
         lambda i: ("/api/service-map", {"window": "1h"}), 5, ""),
        ("metric series: histogram, last 24 h",
         lambda i: ("/api/metric-series", {"name": "http.server.request.duration",
                                           "window": "24h"}), 10, ""),
        ("attribute key suggestions", lambda i: ("/api/attributes", {}), 10, ""),
    ]  # fmt: skip
    print("server time (Server-Timing header), after one warm-up pass:")
    for warm in (True, False):
        for label, make, n, target in cases:
            measure(label, make, n, target, warm)
    rss_after = console.rss_mb()
    print(f"console RSS: {rss_start:.0f} MB after start, {rss_after:.0f} MB after the queries "
          f"(target flat, < 300 MB)")  # fmt: skip
    if browser:
        bench_browser(console, client)
    client.close()
    console.stop()


# --------------------------------------------------------------------------- 3. browser


def bench_browser(console: ConsoleProcess, client: httpx.Client) -> None:
    print("\n== A 10,000-span trace in Chromium ==")
    if not Path(CHROMIUM).exists():
        print("skipped: /usr/bin/chromium is missing (apt-get install chromium)")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (uv add --dev playwright)")
        return
    big = Generator(seed=9).big_trace(10_000, time.time_ns() - 60 * SECOND)
    client.post(f"{console.otlp}/v1/traces", content=big.traces_request().SerializeToString(),
                headers=PROTOBUF)  # fmt: skip
    trace_id = big.trace_ids[0]
    for _ in range(200):
        wf = client.get(f"{console.ui}/api/traces/{trace_id}/waterfall")
        if wf.status_code == 200 and wf.json()["span_count"] == 10_000:
            break
        time.sleep(0.1)
    print(f"waterfall JSON: {len(wf.content) / 1024:.0f} KiB, server {server_ms(wf):.0f} ms")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        loads, toggles = [], []
        for _ in range(5):
            page.goto(f"{console.ui}/trace/{trace_id}")
            page.wait_for_selector("body[data-ready='1']")
            loads.append(page.evaluate("window.__traceReady.at"))
            toggles.append(page.evaluate(
                "() => { const t = performance.now();"
                " document.getElementById('collapse-all').click();"
                " document.getElementById('expand-all').click();"
                " document.getElementById('viewport').scrollTop = 120000;"
                " document.getElementById('viewport').dispatchEvent(new Event('scroll'));"
                " return performance.now() - t; }"
            ))  # fmt: skip
        browser.close()
    print(f"navigation -> interactive waterfall: median {statistics.median(loads):.0f} ms, "
          f"worst {max(loads):.0f} ms of 5 (target < 1000 ms)")  # fmt: skip
    print(f"collapse all + expand all + scroll: median {statistics.median(toggles):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="size of the store")
    parser.add_argument("--requests", type=int, default=300, help="ingest requests to send")
    parser.add_argument("--threads", type=int, default=2, help="ingest client threads")
    parser.add_argument("--paced-rate", type=int, default=20_000, help="spans/s, paced phase")
    parser.add_argument("--paced-seconds", type=float, default=10, help="paced phase length")
    cache = Path(tempfile.gettempdir()) / "otel-lab-bench"
    parser.add_argument("--cache", type=Path, default=cache,
                        help="where the generated store is kept between runs")  # fmt: skip
    parser.add_argument("--regenerate", action="store_true", help="rebuild the store")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        if not args.skip_ingest:
            bench_ingest(Path(tmp), args.requests, args.threads)
            bench_paced(Path(tmp), args.paced_rate, args.paced_seconds, args.threads)
    if not args.skip_store:
        bench_store(args.cache, args.spans, args.regenerate, not args.skip_browser)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
