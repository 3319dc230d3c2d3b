"""Every Grafana panel query that targets Prometheus returns data from the running system.

Issue 5, section 6. A real Prometheus (Debian package ``prometheus``) scrapes the running
embedded system (the session fixture ``system``: ``otel-lab up`` on free ports) every second,
with the jobs, labels and alert rules of the stack's ``deploy/prometheus/prometheus.yml``, while
the project's load generator drives traffic through the gateway and a few targeted requests
make sure that the rarer series exist (5xx errors, cache hits, the user -> order -> audit chain,
the weather upstream, worker tasks). Then each query of ``executable_queries()`` runs through
``/api/v1/query`` with Grafana's variables expanded to short windows, and must return at least
one sample that is a number (a panel showing only NaN shows nothing either).

One test per panel query, so a failure names its dashboard and panel title. The queries that
need series only the Collector or Tempo generate, or that exist only while an alert fires
(``collector_only_queries()``), are not executed here: ``test_collector_only_panels_are_listed``
lists them with the reason (printed, and recorded as a junit property).

Time: the system starts once per session; the rest takes about 20-30 s of wall time.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from otel_lab.registry import metrics_jobs
from otel_lab.runtime.harness import RunningSystem, free_ports

from .conftest import PROMETHEUS_DIR, add_summary_lines, load_yaml, require_tool
from .test_dashboard_queries import (
    collector_only_queries,
    executable_queries,
    expand_grafana_variables,
)

# Grafana's interval variables, shortened so that rate() windows fill within seconds.
# A 30 s window holds ~30 samples at the 1 s scrape interval used here.
LIVE_VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "30s"}
SCRAPE_INTERVAL = "1s"
LOAD_SECONDS = 20  # the load generator's --duration
DEADLINE_SECONDS = 45  # from the start of the load until every query must have data
# The worker serves its Prometheus metrics on a side port (no HTTP API of its own).
SIDE_PORT_JOBS = {"worker": "WORKER_METRICS_PORT"}


@dataclass
class Outcome:
    """What a query returned the last time it ran."""

    ok: bool = False
    detail: str = "not run"
    attempts: int = 0


@dataclass
class LiveRun:
    prometheus: str
    jobs: dict[str, str]  # job -> scraped address
    outcomes: dict[tuple[str, str, str], Outcome] = field(default_factory=dict)
    exemplars: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- Prometheus
def _app_scrape_configs() -> list[dict]:
    """The stack's scrape jobs for the Otel Lab services (``group: app``), as configured."""
    stack = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert isinstance(stack, dict)
    return [
        job
        for job in stack["scrape_configs"]
        if any(sc.get("labels", {}).get("group") == "app" for sc in job["static_configs"])
    ]


def _embedded_address(system: RunningSystem, job: str) -> str:
    """Where the embedded system serves the metrics of ``job`` (a stack service name)."""
    if job in SIDE_PORT_JOBS:
        return f"127.0.0.1:{system.env[SIDE_PORT_JOBS[job]]}"
    if job not in system.urls:
        pytest.fail(
            f"the stack scrapes job {job!r} but the embedded system runs no such service "
            f"(running: {', '.join(sorted(system.urls))})"
        )
    return urllib.parse.urlsplit(system.urls[job]).netloc


def _prometheus_config(system: RunningSystem) -> tuple[dict, dict[str, str]]:
    """The stack's prometheus.yml, pointed at the embedded system: same job names, same
    labels (``job`` = service name, ``group: app``), same alert rules, 1 s scrapes."""
    stack = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert isinstance(stack, dict)
    jobs: dict[str, str] = {}
    scrape_configs = []
    for job in _app_scrape_configs():
        name = job["job_name"]
        address = jobs[name] = _embedded_address(system, name)
        labels = {k: v for sc in job["static_configs"] for k, v in sc.get("labels", {}).items()}
        scrape_configs.append(
            {
                "job_name": name,
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "metrics_path": job.get("metrics_path", "/metrics"),
                "static_configs": [{"targets": [address], "labels": labels}],
            }
        )
    rules = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": "5s",
            "external_labels": stack["global"].get("external_labels", {}),
        },
        "rule_files": rules,
        "scrape_configs": scrape_configs,
    }
    return config, jobs


def _start_prometheus(binary: str, workdir: Path, config: dict) -> tuple[subprocess.Popen, str]:
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    (port,) = free_ports(1)
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def _wait_until(condition, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"{what}: prometheus exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _query(client: httpx.Client, expr: str) -> dict:
    response = client.get("/api/v1/query", params={"query": expr})
    return response.json()


def _judge(body: dict) -> Outcome:
    """Data is at least one sample whose value is a number."""
    if body.get("status") != "success":
        return Outcome(False, f"query error: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    elif data["resultType"] == "vector":
        values = [sample["value"][1] for sample in data["result"]]
    else:  # matrix (not expected from an instant query of these panels)
        values = [v for series in data["result"] for _, v in series["values"]]
    if not values:
        return Outcome(False, "no data (empty result)")
    numbers = [float(v) for v in values if not math.isnan(float(v))]
    if not numbers:
        return Outcome(False, f"only NaN in {len(values)} series")
    return Outcome(True, f"{len(values)} series, e.g. {numbers[0]:.4g}")


# ----------------------------------------------------------------------------- traffic
def _start_load(gateway: str, workdir: Path) -> subprocess.Popen:
    """The project's load generator, as its own process (bounded: --duration)."""
    log = (workdir / "loadgen.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_lab.loadgen",
            "--host",
            gateway,
            "--duration",
            str(LOAD_SECONDS),
            "--concurrency",
            "2",
            "--delay",
            "0.1",
            "--quiet",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def _targeted_requests(client: httpx.Client, round_index: int) -> None:
    """Requests that some panels need and the random mix may not send in time.

    Through the gateway, as a user would: a 5xx (error rate, errors by type), an item written
    then read twice (cache miss, then hit; a worker task; a DB operation), the chain
    gateway -> user-service -> order-service -> audit-service, the weather upstream (external
    API time), /analyze (the MicroTrace panels)."""
    try:
        client.get("/error-simulation", params={"probability": 1})
        created = client.post(
            "/items", json={"name": f"dashboard item {round_index}", "description": "live"}
        )
        if created.status_code == 201:
            item_id = created.json()["id"]
            client.get(f"/items/{item_id}")
            client.get(f"/items/{item_id}")
        client.post("/api/v1/process", json={"user_id": 1001 + round_index % 10, "action": "t"})
        client.get("/weather/london")
        client.post("/analyze", json={"a": 1.5, "b": 2.5})
    except httpx.HTTPError:
        pass  # a slow answer is not the point here; the queries below judge the outcome


# ----------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def live(system: RunningSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """Prometheus scraping the system under load; every executable query run until it returns
    data or the deadline passes. The outcomes are judged by the tests below."""
    binary = require_tool("prometheus")  # fails with "apt-get install prometheus" if absent
    workdir = tmp_path_factory.mktemp("live-prometheus")
    config, jobs = _prometheus_config(system)
    proc, url = _start_prometheus(binary, workdir, config)
    log = workdir / "prometheus.log"
    load: subprocess.Popen | None = None
    client = httpx.Client(base_url=url, timeout=10.0)
    traffic = httpx.Client(base_url=system.url("gateway"), timeout=15.0)
    try:

        def ready() -> bool:
            try:
                return client.get("/-/ready").status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(ready, 30, "prometheus ready", proc, log)

        def all_targets_up() -> bool:
            body = _query(client, 'up{group="app"} == 1')
            up = {s["metric"]["job"] for s in body.get("data", {}).get("result", [])}
            return up >= set(jobs)

        _wait_until(all_targets_up, 20, f"all targets up ({', '.join(jobs)})", proc, log)

        run = LiveRun(prometheus=url, jobs=jobs)
        pending = {q: Outcome() for q in executable_queries()}
        run.outcomes = dict(pending)
        started = time.monotonic()
        load = _start_load(system.url("gateway"), workdir)
        round_index = 0
        while pending and time.monotonic() - started < DEADLINE_SECONDS:
            _targeted_requests(traffic, round_index)
            round_index += 1
            if time.monotonic() - started < 5:  # let rate() windows get two samples first
                time.sleep(1)
                continue
            for key in list(pending):
                outcome = _judge(_query(client, expand_grafana_variables(key[2], LIVE_VARIABLES)))
                outcome.attempts = pending[key].attempts + 1
                run.outcomes[key] = outcome
                if outcome.ok:
                    del pending[key]
                else:
                    pending[key] = outcome
            time.sleep(1)
        run.notes.append(
            f"{len(run.outcomes) - len(pending)}/{len(run.outcomes)} queries returned data "
            f"{time.monotonic() - started:.1f} s after the load started"
        )

        end = time.time()
        response = client.get(
            "/api/v1/query_exemplars",
            params={"query": "request_latency_seconds_bucket", "start": end - 120, "end": end},
        )
        run.exemplars = response.json().get("data") or []
        yield run
    finally:
        traffic.close()
        client.close()
        for child in (load, proc):
            if child is not None and child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def _query_id(query: tuple[str, str, str]) -> str:
    dashboard, title, _ = query
    return f"{dashboard} / {title}"


EXECUTABLE = executable_queries()


def test_scrapes_every_stack_service(live: LiveRun) -> None:
    """The jobs are the stack's service names (the dashboards filter on ``job``)."""
    assert set(live.jobs) >= set(metrics_jobs())


@pytest.mark.parametrize("query", EXECUTABLE, ids=[_query_id(q) for q in EXECUTABLE])
def test_panel_returns_data(live: LiveRun, query: tuple[str, str, str]) -> None:
    dashboard, title, expr = query
    outcome = live.outcomes[query]
    assert outcome.ok, (
        f"dashboard {dashboard!r}, panel {title!r}: {outcome.detail} "
        f"(after {outcome.attempts} attempts)\n"
        f"query: {expand_grafana_variables(expr, LIVE_VARIABLES)}"
    )


def test_judge_rejects_empty_and_nan(live: LiveRun) -> None:
    """The check above can fail: a series nobody emits is empty, 0/0 is only NaN."""
    with httpx.Client(base_url=live.prometheus, timeout=10.0) as client:
        missing = _judge(_query(client, 'sum(rate(requests_total{job="no-such-service"}[30s]))'))
        nan = _judge(_query(client, "vector(0) / 0"))
        wrong_label = _judge(_query(client, 'requests_total{service="gateway"}'))
    assert (missing.ok, nan.ok, wrong_label.ok) == (False, False, False)
    assert "empty" in missing.detail and "NaN" in nan.detail


def test_latency_exemplars_carry_trace_ids(live: LiveRun) -> None:
    """The services' histograms carry trace_id exemplars, stored by Prometheus (Grafana's
    exemplar -> trace link)."""
    exemplars = [e for series in live.exemplars for e in series["exemplars"]]
    assert exemplars, "no exemplars for request_latency_seconds_bucket"
    trace_ids = {e["labels"].get("trace_id", "") for e in exemplars}
    assert all(len(t) == 32 and int(t, 16) for t in trace_ids), trace_ids
    jobs = {series["seriesLabels"]["job"] for series in live.exemplars}
    assert {"gateway", "api"} <= jobs, jobs


def test_collector_only_panels_are_listed(
    live: LiveRun, record_property: pytest.RecordProperty, request: pytest.FixtureRequest
) -> None:
    """Not executed here, with the reason: the series need the Collector (stack mode) or a
    firing alert. Listed in the terminal summary (and as junit properties) so that a reader of
    the test output knows what was not checked."""
    listed = collector_only_queries()
    assert listed, "expected span-metrics / service-graph panels to be listed"
    lines = [f"panel query {d} / {t}: {reason}" for d, t, _, reason in listed]
    for line in lines:
        record_property("not_executed", line)
    add_summary_lines(request.config, [*lines, *live.notes])
    assert not {(d, t, e) for d, t, e, _ in listed} & set(EXECUTABLE)


# ----------------------------------------------------------------------------- the console
# Issue 11: the console evaluates the same panel queries itself (otel_lab.console.promql).
# Same samples, same numbers: the raw samples Prometheus scraped are fed to the console's
# evaluator, and each query's result must equal Prometheus' to this relative tolerance (float
# summation order is the only expected difference).
PARITY_TOLERANCE = 1e-6


def _prometheus_samples(client: httpx.Client, at: float) -> list:
    """Every raw sample Prometheus holds for the last 6 minutes before ``at`` (a 30 s rate
    window plus the 5 minute look-back), as the console's in-memory series."""
    from otel_lab.console.promql import Series

    body = client.get("/api/v1/query", params={"query": '{job=~".+"}[6m]', "time": at}).json()
    assert body["status"] == "success", body
    out = []
    for item in body["data"]["result"]:
        labels = tuple(sorted(item["metric"].items()))
        ts = [round(float(t) * 1000) for t, _ in item["values"]]
        out.append(Series(labels, ts, [float(v) for _, v in item["values"]]))
    return out


def _as_map(result: dict) -> dict[tuple, float]:
    data = result["data"]
    if data["resultType"] == "scalar":
        return {(): float(data["result"][1])}
    return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in data["result"]}


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=PARITY_TOLERANCE, abs_tol=1e-12)


def test_console_evaluator_matches_prometheus(live: LiveRun) -> None:
    """Every executable panel query, on the samples Prometheus scraped: the console's PromQL
    gives the same series and the same numbers as Prometheus."""
    from otel_lab.console.promql import Evaluator, MemorySource, parse

    with httpx.Client(base_url=live.prometheus, timeout=30.0) as client:
        # Samples at least a few seconds old: a scrape appended late on a busy host (its
        # timestamp is when it started) would otherwise land between the two reads.
        at = round(time.time() - 5, 3)
        source = MemorySource(_prometheus_samples(client, at))
        mismatches = []
        compared = 0
        for dashboard, title, expr in EXECUTABLE:
            query = expand_grafana_variables(expr, LIVE_VARIABLES)
            expected = _as_map(
                client.get("/api/v1/query", params={"query": query, "time": at}).json()
            )
            value = Evaluator(source).instant(parse(query), round(at * 1000))
            if isinstance(value, float):
                got = {(): value}
            else:
                got = {tuple((k, v) for k, v in labels): v for labels, v in value}
            if set(got) != set(expected):
                problem = f"series {sorted(got)} != {sorted(expected)}"
                mismatches.append(f"{dashboard} / {title}: {problem}")
                continue
            for key, want in expected.items():
                compared += 1
                if not _same(got[key], want):
                    mismatches.append(f"{dashboard} / {title} {dict(key)}: {got[key]} != {want}")
    assert not mismatches, "\n".join(mismatches)
    assert compared >= len(EXECUTABLE)


@pytest.mark.parametrize("query", EXECUTABLE, ids=[_query_id(q) for q in EXECUTABLE])
def test_console_answers_the_panel_from_its_own_scrape(
    live: LiveRun, system: RunningSystem, query: tuple[str, str, str]
) -> None:
    """In embedded mode the console scrapes the same targets itself: each panel query returns
    data there too (its own scrape times, so the numbers are close, not equal)."""
    dashboard, title, expr = query
    expanded = expand_grafana_variables(expr, LIVE_VARIABLES)
    with httpx.Client(base_url=system.url("console"), timeout=30.0) as client:
        deadline = time.monotonic() + 20
        while True:
            outcome = _judge(client.get("/api/prom/query", params={"query": expanded}).json())
            if outcome.ok or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert outcome.ok, f"console: dashboard {dashboard!r}, panel {title!r}: {outcome.detail}"
