"""What scraping /metrics and evaluating the alert rules cost the console (issue 11).

Starts the whole system twice with ``otel-lab up`` (console scraping off:
``CONSOLE_SCRAPE_INTERVAL=0``; on: the shipped 10 s scrape and 15 s rule interval), drives the
same steady traffic through the gateway from this process for ``--duration`` seconds, and reads
the console's CPU time (user + system, psutil) and the spans it ingested. Printed: console CPU
per span ingested in both variants (the figure the lead tracks), and, from the "on" run, the
scraper thread's CPU per scrape round (fetch + parse + diff of every target) and the rules
thread's CPU per evaluation, as the console reports them (/api/prom/targets, /api/alerts).

    .venv/bin/python scripts/bench_console_scrape.py                 # 60 s per variant
    .venv/bin/python scripts/bench_console_scrape.py --duration 30

Figures are only comparable within one run (this host's speed varies by up to 1.6x).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from otel_lab.runtime.harness import running_system

VARIANTS = {
    "off": {"CONSOLE_SCRAPE_INTERVAL": "0"},
    "on": {},  # the shipped defaults: scrape every 10 s, rules every 15 s
}


def traffic(gateway: str, stop: threading.Event) -> None:
    """About 20 requests/s: items written and read, the chain, a failing route."""
    with httpx.Client(base_url=gateway, timeout=10) as client:
        i = 0
        while not stop.is_set():
            try:
                created = client.post("/items", json={"name": f"bench {i}", "description": "x"})
                if created.status_code == 201:
                    client.get(f"/items/{created.json()['id']}")
                client.post("/api/v1/process", json={"user_id": 1001 + i % 10, "action": "b"})
                client.get("/error-simulation", params={"probability": 0.2})
            except httpx.HTTPError:
                pass
            i += 1
            stop.wait(0.2)


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run(name: str, env: dict[str, str], duration: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, running_system(Path(tmp), env=env) as system:
        console = psutil.Process(system.pid("console"))
        ui = httpx.Client(base_url=system.url("console"), timeout=30)
        stop = threading.Event()
        thread = threading.Thread(target=traffic, args=(system.url("gateway"), stop))
        thread.start()
        time.sleep(15)  # warm-up: imports, first scrapes, first rule evaluation
        spans0 = ui.get("/api/stats").json()["written"]["spans"]
        cpu0 = cpu(console)
        targets0 = ui.get("/api/prom/targets").json()
        alerts0 = ui.get("/api/alerts").json()
        time.sleep(duration)
        spans1 = ui.get("/api/stats").json()["written"]["spans"]
        cpu1 = cpu(console)
        targets1 = ui.get("/api/prom/targets").json()
        alerts1 = ui.get("/api/alerts").json()
        stop.set()
        thread.join()
        out = {
            "spans": spans1 - spans0,
            "console_cpu_s": cpu1 - cpu0,
            "us_per_span": (cpu1 - cpu0) / max(spans1 - spans0, 1) * 1e6,
        }
        if name == "on":
            rounds = targets1["scrapes"] - targets0["scrapes"]
            out["scrape_rounds"] = rounds
            out["scrape_ms_per_round"] = (
                (targets1["cpu_seconds"] - targets0["cpu_seconds"]) / max(rounds, 1) * 1000
            )
            out["series"] = sum(t["series"] for t in targets1["targets"])
            evaluations = duration / alerts1["interval_seconds"]
            out["rules_ms_per_evaluation"] = (
                (alerts1["cpu_seconds"] - alerts0["cpu_seconds"]) / evaluations * 1000
            )
            db = ui.get("/api/sql", params={"q": "SELECT count(*) FROM prom_samples"}).json()
            out["prom_sample_rows"] = db["rows"][0][0]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    results = {name: run(name, env, args.duration) for name, env in VARIANTS.items()}
    for name, r in results.items():
        print(
            f"{name:>3}: {r['spans']:>6} spans, console {r['console_cpu_s']:.2f} s CPU, "
            f"{r['us_per_span']:.0f} us per span"
        )
    on = results["on"]
    print(
        f"scraping: {on['scrape_rounds']} rounds of {on['series']} series, "
        f"{on['scrape_ms_per_round']:.1f} ms CPU per round (scraper thread); "
        f"rules: {on['rules_ms_per_evaluation']:.1f} ms CPU per evaluation; "
        f"{on['prom_sample_rows']} sample rows stored"
    )
    ratio = on["us_per_span"] / results["off"]["us_per_span"]
    print(f"console CPU per span, on / off: {ratio:.2f}")


if __name__ == "__main__":
    main()
