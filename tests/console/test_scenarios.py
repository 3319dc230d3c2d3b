"""Fault scenarios at run time (issue 11): switched on from the console's API, they slow or
fail real requests within seconds, mark the spans they touch, move a dashboard panel and
make an alert rule pending; switched off, new requests are untouched again.

The whole system runs (session fixture ``system``); the flag file is the one the services
read through OpenFeature's flagd provider (in-process resolver).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from otel_lab.runtime.harness import RunningSystem

from .test_scraped import query, wait


@pytest.fixture(scope="module")
def ui(system: RunningSystem) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url("console"), timeout=30.0) as client:
        yield client


def switch(ui: httpx.Client, name: str, enabled: bool) -> dict[str, Any]:
    response = ui.post(f"/api/scenarios/{name}", json={"enabled": enabled})
    assert response.status_code == 200, response.text
    (state,) = [s for s in response.json()["scenarios"] if s["name"] == name]
    assert state["enabled"] is enabled
    return state


def chain(gateway: httpx.Client, n: int) -> list[httpx.Response]:
    return [
        gateway.post("/api/v1/process", json={"user_id": 1001 + i % 5, "action": "fault"})
        for i in range(n)
    ]


def until(ui: httpx.Client, gateway: httpx.Client, probe: Callable[[], Any], what: str) -> Any:
    """Drive the chain while waiting (the fault only shows under traffic)."""

    def step() -> Any:
        chain(gateway, 2)
        return probe()

    return wait(step, what, timeout=90)


def marked(ui: httpx.Client, name: str) -> list[dict[str, Any]]:
    return ui.get("/api/traces", params={"attr": f"otel_lab.fault={name}", "limit": 50}).json()[
        "traces"
    ]


def alert(ui: httpx.Client, name: str, **labels: str) -> dict[str, Any] | None:
    rules = {r["name"]: r for r in ui.get("/api/alerts").json()["rules"]}
    for a in rules[name]["alerts"]:
        if all(a["labels"].get(k) == v for k, v in labels.items()):
            return a
    return None


def test_scenarios_are_listed_and_bad_input_is_a_4xx(ui: httpx.Client) -> None:
    names = {s["name"]: s for s in ui.get("/api/scenarios").json()["scenarios"]}
    assert {"slow-database", "audit-errors"} <= set(names)
    assert not any(s["enabled"] for s in names.values())
    assert ui.post("/api/scenarios/nope", json={"enabled": True}).status_code == 404
    assert ui.post("/api/scenarios/slow-database", json={"enabled": "yes"}).status_code == 400


def test_slow_database(ui: httpx.Client, gateway: httpx.Client) -> None:
    switch(ui, "slow-database", True)
    try:
        traces = until(ui, gateway, lambda: marked(ui, "slow-database"), "a marked trace")
        spans = ui.get(f"/api/traces/{traces[0]['trace_id']}").json()["spans"]
        sleeps = [s for s in spans if "pg_sleep" in str(s["attributes"].get("db.statement", ""))
                  or "pg_sleep" in str(s["attributes"].get("db.query.text", ""))]  # fmt: skip
        assert sleeps and sleeps[0]["duration_ms"] >= 600, [s["name"] for s in spans]
        assert any(s["attributes"].get("otel_lab.fault") == "slow-database" for s in spans)
        # The panel "Request latency p50 / p95" moves: order-service's p95 is over half a second.
        p95 = (
            "histogram_quantile(0.95, sum by (le, job) (rate(request_latency_seconds_bucket"
            '{job="order-service"}[30s]))) > 0.5'
        )
        until(ui, gateway, lambda: query(ui, p95), "order-service p95 over 0.5 s")
        # The latency SLO burns: its fast-burn alert is pending (it fires after its `for`).
        firing = until(
            ui, gateway,
            lambda: alert(ui, "SLOLatencyBurnRateFast", path="/api/v1/process"),
            "SLOLatencyBurnRateFast active for POST /api/v1/process",
        )  # fmt: skip
        assert firing["state"] in ("pending", "firing")
    finally:
        switch(ui, "slow-database", False)
    time.sleep(2)  # the services notice within about a second
    started = time.monotonic()
    assert all(r.status_code == 200 for r in chain(gateway, 3))
    assert time.monotonic() - started < 3 * 0.6, "requests still slow after switching off"


def test_audit_errors(ui: httpx.Client, gateway: httpx.Client) -> None:
    switch(ui, "audit-errors", True)
    try:
        traces = until(ui, gateway, lambda: marked(ui, "audit-errors"), "a marked trace")
        assert traces[0]["error_count"] > 0
        errors = 'sum by (job) (rate(requests_total{job="audit-service",status=~"5.."}[30s])) > 0'
        until(ui, gateway, lambda: query(ui, errors), "audit-service 5xx rate")
        active = until(
            ui, gateway, lambda: alert(ui, "High5xxRate", job="audit-service"),
            "High5xxRate active for audit-service",
        )  # fmt: skip
        assert active["state"] in ("pending", "firing")
    finally:
        switch(ui, "audit-errors", False)
    time.sleep(2)
    before = {t["trace_id"] for t in marked(ui, "audit-errors")}
    assert all(r.status_code == 200 for r in chain(gateway, 6))
    time.sleep(2)
    assert {t["trace_id"] for t in marked(ui, "audit-errors")} == before
