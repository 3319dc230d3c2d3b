"""How long the console takes to fill each provisioned dashboard (issue 11).

Two ways to get data:

- ``--url http://127.0.0.1:16686``: a running console (``otel-lab up``, with ``otel-lab load``
  for a few minutes to fill it); each dashboard is fetched over HTTP with
  ``GET /api/dashboards/{uid}``, which is what the Dashboards page does. For a console
  serving a copy of a store (``python -m otel_lab.console --db COPY --scrape-interval 0``)
  give ``--end`` (the copy's last scrape), so that every run sees the same time range.
- ``--db PATH``: a copy of a console store (``.otel-lab/console/telemetry.db``; copied with
  SQLite's backup API first, so a live store can be given). The dashboards are rendered in this
  process with the code of this checkout (no HTTP, no rules engine, so no recorded series),
  which is what to compare before and after a change; ``--profile`` prints the cProfile top
  of one render of each dashboard.

Printed per dashboard: the median and the best wall time of ``--repeat`` renders and, with
``--db``, the median CPU time of the rendering thread (less disturbed by a busy host); and
the store's size (scraped series, samples) for scale.

    .venv/bin/python scripts/bench_dashboards.py --url http://127.0.0.1:16686
    .venv/bin/python scripts/bench_dashboards.py --db .otel-lab/console/telemetry.db --repeat 5

Figures are only comparable within one run on one host (its speed varies by up to 1.6x).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from otel_lab.console import dashboards
from otel_lab.console.config import checkout_deploy_dir
from otel_lab.console.scrape import StoreSource


def over_http(url: str, repeat: int, end: float | None) -> None:
    params = {"end": end} if end is not None else {}
    with httpx.Client(base_url=url, timeout=60) as client:
        boards = client.get("/api/dashboards").raise_for_status().json()["dashboards"]
        for board in boards:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                response = client.get(f"/api/dashboards/{board['uid']}", params=params)
                body = response.raise_for_status().json()
                times.append(time.perf_counter() - t0)
            report(board["uid"], times, body)


def in_process(db: Path, repeat: int, profile: bool, end: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "telemetry.db"
        with sqlite3.connect(db) as live, sqlite3.connect(copy) as dst:
            live.backup(dst)
        conn = sqlite3.connect(copy)
        series, samples, last_ns = conn.execute(
            "SELECT (SELECT count(*) FROM prom_series), (SELECT count(*) FROM prom_samples),"
            " (SELECT max(time_ns) FROM prom_scrapes)"
        ).fetchone()
        print(f"store: {series} scraped series, {samples} samples")
        end_s = end if end is not None else last_ns / 1e9
        boards = dashboards.load(checkout_deploy_dir() / "grafana" / "dashboards")
        for uid, board in boards.items():
            times, cpu = [], []
            body: dict = {}
            for _ in range(repeat):
                renderer = dashboards.Renderer(conn, StoreSource(conn), end_s=end_s)
                t0, c0 = time.perf_counter(), time.thread_time()
                body = renderer.render(board)
                times.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            report(uid, times, body, cpu)
            if profile:
                prof = cProfile.Profile()
                renderer = dashboards.Renderer(conn, StoreSource(conn), end_s=end_s)
                prof.runcall(renderer.render, board)
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
                print(out.getvalue())


def report(uid: str, times: list[float], body: dict, cpu: list[float] | None = None) -> None:
    panels = [p for p in body.get("panels", []) if p.get("type") != "row"]
    empty = sum(1 for p in panels if p.get("empty"))
    cpu_text = f"  CPU median {statistics.median(cpu):6.3f} s" if cpu else ""
    print(
        f"{uid:28} wall median {statistics.median(times):6.3f} s  best {min(times):6.3f} s"
        f"{cpu_text}  ({len(panels)} panels, {empty} empty)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running console")
    where.add_argument("--db", type=Path, help="a console store to copy and render from")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one render (--db)")
    parser.add_argument(
        "--end", type=float, help="end of the time range, unix seconds (--db: the last scrape)"
    )
    args = parser.parse_args()
    if args.url:
        over_http(args.url, args.repeat, args.end)
    else:
        in_process(args.db, args.repeat, args.profile, args.end)


if __name__ == "__main__":
    main()
