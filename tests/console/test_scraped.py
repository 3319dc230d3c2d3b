"""Embedded mode: the services' Prometheus metrics reach the console, and the dashboards and
alert rules of the stack are evaluated on them (issue 11).

The whole system runs (``otel-lab up`` on free ports, the session fixture ``system``); the
console scrapes every service's and the worker's ``/metrics`` once a second (as the tests'
Prometheus does in tests/deploy). Traffic goes through the gateway; everything is read back
through the console's JSON API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from otel_lab.console import dashboards
from otel_lab.registry import metrics_jobs
from otel_lab.runtime.harness import RunningSystem

from .conftest import browser_page, steady_traffic

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus" / "rules"


def wait(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s (last: {str(last)[:500]})")


@pytest.fixture(scope="module")
def ui(system: RunningSystem) -> httpx.Client:
    with httpx.Client(base_url=system.url("console"), timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def traffic(gateway: httpx.Client) -> list[str]:
    """Requests that touch every metric asserted below: a miss then hits on the items cache,
    a worker task, the user -> order -> audit chain (circuit breakers), a 5xx."""
    trace_ids = []
    for i in range(4):
        created = gateway.post("/items", json={"name": f"scraped {i}", "description": "d"})
        assert created.status_code == 201, created.text
        item = created.json()["id"]
        for _ in range(2):
            response = gateway.get(f"/items/{item}")
            assert response.status_code == 200
            trace_ids.append(response.headers["traceresponse"].split("-")[1])
        gateway.post("/api/v1/process", json={"user_id": 1001 + i, "action": "scrape"})
        gateway.get("/error-simulation", params={"probability": 1})
        if i == 0:
            # The first round creates the series; rate() counts only what a series gains
            # after its first sample (in Prometheus too), so let a few scrapes (1 s apart)
            # see them before the other rounds make them grow.
            time.sleep(3)
    return trace_ids


def query(ui: httpx.Client, expr: str) -> list[dict[str, Any]]:
    body = ui.get("/api/prom/query", params={"query": expr}).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_every_target_is_scraped(ui: httpx.Client) -> None:
    jobs = set(metrics_jobs())  # every service and the worker

    def all_up() -> bool:
        targets = ui.get("/api/prom/targets").json()["targets"]
        return {t["job"] for t in targets if t["up"]} >= jobs

    wait(all_up, "every service and the worker scraped")
    up = {s["metric"]["job"]: s["value"][1] for s in query(ui, "up")}
    assert {job: up.get(job) for job in jobs} == dict.fromkeys(jobs, "1")


def test_service_metrics_are_queryable(ui: httpx.Client, traffic: list[str]) -> None:
    # Six GET /items/{id} through the gateway (the gateway's route template is its proxy's).
    items = 'sum by (job) (requests_total{job="gateway",method="GET",path=~"/items/.+"}) >= 6'
    (gateway_items,) = wait(lambda: query(ui, items), "gateway requests_total for GET /items")
    assert gateway_items["metric"] == {"job": "gateway"}
    hits = wait(lambda: query(ui, 'cache_hits_total{job="api"} > 0'), "api cache hits")
    assert {s["metric"]["cache"] for s in hits}
    breaker_jobs = {"gateway", "user-service", "order-service"}
    breakers = wait(
        lambda: (
            (b := query(ui, "circuit_breaker_state"))
            and {s["metric"]["job"] for s in b} >= breaker_jobs
            and b
        ),
        "circuit_breaker_state of the gateway, user-service and order-service",
    )
    assert all(s["value"][1] in ("0", "1", "2") for s in breakers)
    p95 = wait(
        lambda: query(
            ui,
            "histogram_quantile(0.95, sum by (le, job) "
            '(rate(request_latency_seconds_bucket{job="gateway"}[1m])))',
        ),
        "gateway latency p95",
    )
    assert 0 < float(p95[0]["value"][1]) < 10


def test_exemplars_link_to_stored_traces(ui: httpx.Client, traffic: list[str]) -> None:
    def found() -> list[dict[str, Any]]:
        body = ui.get(
            "/api/prom/exemplars",
            params={"query": 'request_latency_seconds_bucket{job="api",path="/items/{item_id}"}'},
        ).json()
        return body["data"]

    exemplars = wait(found, "exemplars on api's latency histogram")
    trace_ids = {e["trace_id"] for e in exemplars}
    assert all(len(t) == 32 for t in trace_ids)
    assert set(trace_ids) & set(traffic), (trace_ids, traffic)
    # An exemplar is a trace the console stores (the API request's own trace; its spans are
    # exported in their own batches, a moment after the metric is scraped).
    wait(
        lambda: [t for t in trace_ids if ui.get(f"/api/traces/{t}").status_code == 200],
        f"an exemplar's trace stored ({trace_ids})",
    )


def test_dashboards_are_the_grafana_ones(ui: httpx.Client) -> None:
    listed = ui.get("/api/dashboards").json()["dashboards"]
    files = [json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))]
    assert sorted((d["uid"], d["title"]) for d in listed) == sorted(
        (d["uid"], d["title"]) for d in files
    )
    assert ui.get("/api/dashboards/no-such-board").status_code == 404


def _titles(doc: dict[str, Any]) -> list[str]:
    out = []
    for panel in doc["panels"]:
        out.append(panel["title"])
        out += [p["title"] for p in panel.get("panels", [])]
    return out


def test_dashboards_fill_from_the_running_system(
    ui: httpx.Client, traffic: list[str], gateway: httpx.Client
) -> None:
    """Same panel titles as in Grafana; the panels of scraped series, the trace and log panels
    have data; the latency panel links to the traces behind it; a panel of series that exist
    only in some states (ALERTS) says so when empty. (The panels of series the Collector makes
    in stack mode are filled by the console: test_derived.py.)"""
    conditional: list[str] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        board = ui.get(f"/api/dashboards/{doc['uid']}", params={"window": "5m"}).json()
        assert [p["title"] for p in board["panels"]] == _titles(doc)
        errors = [(p["title"], p["error"]) for p in board["panels"] if p.get("error")]
        assert not errors, errors
        for p in board["panels"]:
            if dashboards.why_empty(p.get("queries", [])):
                conditional.append(p["title"])
                # Empty whatever the time range: the panel says why, not "no data in this range"
                if p["empty"]:
                    assert p["note"].startswith(("No data in embedded mode: ", "No data now: ")), p
            else:
                assert "note" not in p, p
    assert "Firing SLO alerts" in conditional, conditional

    seen: dict[str, Any] = {}

    def overview() -> dict[str, Any] | None:
        board = ui.get("/api/dashboards/otel-lab-overview", params={"window": "5m"}).json()
        panels = {p["title"]: p for p in board["panels"]}
        wanted = ("Requests / s", "Request latency p50 / p95", "Cache hit rate",
                  "Request rate by service", "Error rate (5xx)")  # fmt: skip
        filled = all(not panels[t]["empty"] for t in wanted)
        # Links to exemplars, and (for a counter) to the stored slowest and failed traces,
        # exported apart from the scraped metrics.
        errors = panels["Error rate (5xx)"]["links"]
        linked = panels["Request latency p50 / p95"]["links"] and any(
            link["kind"] == "failed" for link in errors
        )
        busy = (panels["Requests / s"]["value"] or 0) > 0
        seen.update(empty=[t for t in wanted if panels[t]["empty"]],
                    requests=panels["Requests / s"]["value"], error_links=errors,
                    latency_links=len(panels["Request latency p50 / p95"]["links"]))  # fmt: skip
        return panels if filled and linked and busy else None

    # "Requests / s" is the rate of the last 4 s (four scrapes): keep traffic going while
    # the board is read (a request per read was not enough once the board took 3.5 s).
    with steady_traffic(str(gateway.base_url), lambda c, _: c.get("/items", params={"limit": 1})):
        try:
            panels = wait(overview, "overview panels filled and linked, requests / s above 0")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {seen}") from None
    latency = panels["Request latency p50 / p95"]
    assert {s["labels"]["job"] for s in latency["series"]} >= {"gateway", "api"}
    assert latency["links"] and len(latency["links"][0]["trace_id"]) == 32
    assert "kind" not in latency["links"][0]  # an exemplar of the latency histogram
    # A counter has no exemplars: the panel links to each service's slowest and failed traces.
    errors = panels["Error rate (5xx)"]["links"]
    assert {link["kind"] for link in errors} == {"slowest", "failed"}, errors

    def panel(uid: str, title: str) -> dict[str, Any] | None:
        board = ui.get(f"/api/dashboards/{uid}", params={"window": "5m"}).json()
        found = {p["title"]: p for p in board["panels"]}[title]
        return None if found["empty"] else found

    # From the console's traces and logs: /error-simulation's, the chain's, the api's.
    wait(lambda: panel("otel-lab-services", "Error traces"), "error traces panel filled")
    wait(lambda: panel("otel-lab-services", "Service dependency map"), "dependency map filled")
    logs = wait(lambda: panel("otel-lab-microtrace", "api logs"), "api logs panel filled")
    assert logs["logs"][0]["service_name"] == "api"


def test_alert_rules_are_evaluated(ui: httpx.Client) -> None:
    names = [
        r["alert"]
        for path in sorted(RULES.glob("*.yml"))
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    body = wait(lambda: (b := ui.get("/api/alerts").json())["evaluated_at"] and b, "alerts")
    rules = {r["name"]: r for r in body["rules"]}
    assert sorted(rules) == sorted(names)
    assert all(r["error"] is None for r in rules.values()), rules
    assert all(r["state"] in ("inactive", "pending", "firing") for r in rules.values())
    assert rules["TargetDown"]["severity"] == "critical"

    # Every target answers: the rule is inactive (a scrape that timed out on a starved host,
    # 0.8 s at the tests' 1 s interval, makes it pending until the next one succeeds).
    def target_down() -> dict[str, Any]:
        (rule,) = [r for r in ui.get("/api/alerts").json()["rules"] if r["name"] == "TargetDown"]
        return rule

    wait(lambda: target_down()["state"] == "inactive", "TargetDown inactive")


def test_bad_promql_is_a_400(ui: httpx.Client) -> None:
    response = ui.get("/api/prom/query", params={"query": "sum("})
    assert response.status_code == 400 and response.json()["status"] == "error"


# ----------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def page(system: RunningSystem, browser: Any) -> Iterator[Any]:
    with browser_page(browser, system.url("console"), 15_000) as pg:
        yield pg


def test_dashboards_page(page: Any, traffic: list[str]) -> None:
    """The overview in the browser: every panel title, charts drawn, and a link from the
    latency panel to a trace that opens."""
    doc = json.loads((DASHBOARDS / "otel-lab-overview.json").read_text())
    page.goto("/dashboards?uid=otel-lab-overview&window=5m")
    page.wait_for_selector(".dash-panel svg.chart")
    titles = page.locator(".dash-panel h3").all_text_contents()
    assert titles == [p["title"] for p in doc["panels"]]
    latency = page.locator('.dash-panel[data-title="Request latency p50 / p95"]')
    latency.locator(".panel-links a").first.wait_for()
    latency.locator(".panel-links a").first.click()
    page.wait_for_url("**/trace/*")
    page.wait_for_selector(".wf-row")


def test_alerts_page(page: Any) -> None:
    page.goto("/alerts")
    page.wait_for_selector('#rules tr[data-alert="TargetDown"]')
    names = page.locator("#rules tr[data-alert]").evaluate_all(
        "rows => rows.map(r => r.dataset.alert)"
    )
    assert "SLOAvailabilityBurnRateFast" in names and "CacheHitRateCollapse" in names
