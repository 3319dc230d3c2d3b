"""Screenshots for the README and docs/walkthrough.md, taken from a real run in Chromium.

Starts the whole system with ``otel-lab up`` (free ports, a throwaway data dir), drives
traffic through the gateway, photographs the README's pages (the traces list, one service
chain trace, the service map, the overview dashboard), then switches each fault on through
the console's API, waits until the dashboard panel and the alert react, and photographs the
pages a newcomer would look at. Re-run it when the UI changes:

    .venv/bin/python scripts/screenshots.py   # writes docs/images/console-*.png, walkthrough-*.png

Needs Debian's chromium (/usr/bin/chromium) and the project venv (playwright).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from otel_lab.runtime.harness import running_system

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ENV = {"CONSOLE_SCRAPE_INTERVAL": "2", "CONSOLE_RULES_INTERVAL": "3",
       "CONSOLE_SLOW_RULES_INTERVAL": "6"}  # fmt: skip


def traffic(gateway: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=gateway, timeout=15) as client:
        i = 0
        while not stop.is_set():
            try:
                client.post("/api/v1/process", json={"user_id": 1001 + i % 5, "action": "tour"})
                created = client.post("/items", json={"name": f"tour {i}", "description": "d"})
                if created.status_code == 201:
                    client.get(f"/items/{created.json()['id']}")
                    client.get(f"/items/{created.json()['id']}")
            except httpx.HTTPError:
                pass
            i += 1
            stop.wait(0.3)


def wait(probe: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(1)
    raise SystemExit(f"{what}: not within {timeout} s")


def alert_active(ui: httpx.Client, name: str) -> bool:
    rules = {r["name"]: r for r in ui.get("/api/alerts").json()["rules"]}
    return rules[name]["state"] in ("pending", "firing")


def alert_firing(ui: httpx.Client, name: str) -> bool:
    rules = {r["name"]: r for r in ui.get("/api/alerts").json()["rules"]}
    return rules[name]["state"] == "firing"


def marked_span(ui: httpx.Client, fault: str) -> str:
    """``/trace/<id>?span=<id>`` of the newest span the fault marked."""
    params = {"attr": f"otel_lab.fault={fault}", "limit": 1}
    (trace,) = ui.get("/api/traces", params=params).json()["traces"]
    spans = ui.get(f"/api/traces/{trace['trace_id']}").json()["spans"]
    (span,) = [s for s in spans if s["attributes"].get("otel_lab.fault") == fault][:1]
    return f"/trace/{trace['trace_id']}?span={span['span_id']}"


def chain_trace(gateway: str) -> str:
    """The trace id of one service-chain request, once the console has all of it."""
    response = httpx.post(
        f"{gateway}/api/v1/process", json={"user_id": 1001, "action": "picture"}, timeout=15
    )
    time.sleep(3)
    return response.headers["traceresponse"].split("-")[1]


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_system(Path(tmp), env=ENV) as system:
        console = system.url("console")
        ui = httpx.Client(base_url=console, timeout=30)
        stop = threading.Event()
        thread = threading.Thread(target=traffic, args=(system.url("gateway"), stop))
        thread.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def shot(path: str, name: str, selector: str | None = None) -> None:
                page.goto(console + path)
                page.wait_for_load_state("networkidle")
                time.sleep(1.5)
                target = page.locator(selector).first if selector else page
                file = OUT / (name if name.endswith(".png") else f"walkthrough-{name}.png")
                target.screenshot(path=str(file))
                print("wrote", file)

            time.sleep(40)  # a baseline before any fault
            # The README's pictures.
            shot("/", "console-traces.png")
            shot(f"/trace/{chain_trace(system.url('gateway'))}", "console-trace.png")
            shot("/map", "console-service-map.png")
            shot("/dashboards?uid=otel-lab-overview&window=5m", "console-dashboard.png")
            # The walkthrough's.
            shot("/dashboards?uid=otel-lab-overview&window=5m", "1-overview")
            # Scenario 1: slow database.
            ui.post("/api/scenarios/slow-database", json={"enabled": True})
            shot("/scenarios", "2-scenarios")
            wait(lambda: alert_active(ui, "SLOLatencyBurnRateFast"), "latency SLO alert")
            time.sleep(10)
            shot("/dashboards?uid=otel-lab-overview&window=5m", "3-latency-panel",
                 '.dash-panel[data-title="Request latency p50 / p95"]')  # fmt: skip
            shot("/alerts", "4-alerts")
            shot(marked_span(ui, "slow-database"), "5-slow-trace")
            ui.post("/api/scenarios/slow-database", json={"enabled": False})
            # Scenario 2: audit errors.
            ui.post("/api/scenarios/audit-errors", json={"enabled": True})
            wait(lambda: alert_active(ui, "High5xxRate"), "5xx alert")
            time.sleep(10)
            shot("/dashboards?uid=otel-lab-overview&window=5m", "6-error-panel",
                 '.dash-panel[data-title="Error rate (5xx)"]')  # fmt: skip
            shot(marked_span(ui, "audit-errors"), "7-error-trace")
            ui.post("/api/scenarios/audit-errors", json={"enabled": False})
            # Scenario 3: cache outage.
            ui.post("/api/scenarios/cache-outage", json={"enabled": True})
            wait(lambda: alert_firing(ui, "CircuitBreakerOpen"), "cache breaker alert", 300)
            shot("/dashboards?uid=otel-lab-overview&window=15m", "8-cache-panel",
                 '.dash-panel[data-title="Cache hit rate"]')  # fmt: skip
            shot("/dashboards?uid=otel-lab-services&window=15m&service=api", "9-breaker-panel",
                 '.dash-panel[data-title="Circuit breakers"]')  # fmt: skip
            shot(marked_span(ui, "cache-outage"), "10-cache-trace")
            # The hit ratio's alert needs its 10 minute window to turn.
            wait(lambda: alert_active(ui, "CacheHitRateCollapse"), "cache hit alert", 900)
            shot("/alerts", "11-cache-alerts")
            ui.post("/api/scenarios/cache-outage", json={"enabled": False})
            browser.close()
        stop.set()
        thread.join()


if __name__ == "__main__":
    main()
