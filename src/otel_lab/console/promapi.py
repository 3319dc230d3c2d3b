"""The console's Prometheus-side API: PromQL queries over the scraped series, scrape
targets, exemplars, alert rules and the Grafana dashboards.

``/api/prom/query`` and ``/api/prom/query_range`` answer in Prometheus' JSON shape
(``{"status": "success", "data": {"resultType": ..., "result": [...]}}``), so a script
written against Prometheus reads the console unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import otel_lab
from otel_lab.console import dashboards, promql, queries
from otel_lab.console.alerts import RuleEngine, RuleRunner, load_rules
from otel_lab.console.scrape import Scraper, StoreSource, exemplars
from otel_lab.console.store import Store
from otel_lab.settings import get_settings


def deploy_dir() -> Path:
    """Where the rule files and dashboards are: ``CONSOLE_DEPLOY_DIR``, or the checkout's
    ``deploy/`` (the console reads the stack's files, it has no copy of its own)."""
    explicit = get_settings().console_deploy_dir
    if explicit:
        return explicit
    return Path(otel_lab.__file__).resolve().parents[2] / "deploy"


@dataclass
class PromState:
    """The scraper and the rules runner of a running console (either may be absent)."""

    scraper: Scraper | None = None
    rules: RuleRunner | None = None
    deploy: Path = field(default_factory=deploy_dir)

    @property
    def engine(self) -> RuleEngine | None:
        return self.rules.engine if self.rules else None

    @property
    def scrape_seconds(self) -> float:
        return self.scraper.interval if self.scraper else dashboards.DEFAULT_SCRAPE_SECONDS


def rules_runner(store: Store, deploy: Path, interval: float) -> RuleRunner:
    """Evaluates ``deploy/prometheus/rules/*.yml`` over the store, on its own connection."""

    def factory() -> RuleEngine:
        paths = sorted((deploy / "prometheus" / "rules").glob("*.yml"))
        return RuleEngine(load_rules(paths), StoreSource(store.open_reader()))

    return RuleRunner(factory, interval)


def _source(store: Store, state: PromState) -> promql.Source:
    base = StoreSource(store.reader())
    engine = state.engine
    if engine is None:
        return base
    from otel_lab.console.alerts import _Combined

    return _Combined(base, engine.recorded, engine.alerts_series)


def _time(value: str | None, default: float) -> float:
    """Unix seconds (float) or RFC 3339, as Prometheus accepts."""
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        ns = queries.parse_time(value, "time")
        return ns / 1e9 if ns is not None else default
    if not math.isfinite(seconds) or abs(seconds) > 1e11:
        raise queries.QueryError(f"time={value[:32]!r}: use unix seconds or RFC 3339")
    return seconds


def _step(value: str | None, span: float) -> float:
    if not value:
        return max(1.0, span / 250)
    try:
        step = float(value)
    except ValueError:
        step = promql.parse_duration_ms(value) / 1000
    if not 0.001 <= step <= 366 * 86400:
        raise promql.PromQLError(f"step={value[:32]!r}: use a duration like 15s, or seconds")
    return step


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if v != int(v) or abs(v) >= 1e15 else str(int(v))


def _bad(detail: str) -> dict[str, Any]:
    return {"status": "error", "errorType": "bad_data", "error": detail}


def add_prom_routes(app: FastAPI, store: Store, state: PromState) -> None:
    from otel_lab.console.api import ConsoleJSON

    @app.get("/api/prom/query")
    def prom_query(query: str = "", time: str | None = None) -> ConsoleJSON:
        """One PromQL instant query (the console's subset; see docs/console-dashboards.md)."""
        t = _time(time, _now())
        try:
            value = promql.Evaluator(_source(store, state)).instant(
                promql.parse(query), int(t * 1000)
            )
        except promql.PromQLError as exc:
            return ConsoleJSON(_bad(str(exc)), status_code=400)
        if isinstance(value, float):
            data = {"resultType": "scalar", "result": [t, _fmt(value)]}
        else:
            data = {
                "resultType": "vector",
                "result": [{"metric": dict(lb), "value": [t, _fmt(v)]} for lb, v in value],
            }
        return ConsoleJSON({"status": "success", "data": data})

    @app.get("/api/prom/query_range")
    def prom_query_range(
        query: str = "", start: str | None = None, end: str | None = None, step: str | None = None
    ) -> ConsoleJSON:
        e = _time(end, _now())
        s = _time(start, e - 3600)
        try:
            st = _step(step, e - s)
            result = promql.Evaluator(_source(store, state)).range(
                promql.parse(query), int(s * 1000), int(e * 1000), int(st * 1000)
            )
        except promql.PromQLError as exc:
            return ConsoleJSON(_bad(str(exc)), status_code=400)
        data = {
            "resultType": "matrix",
            "result": [
                {"metric": dict(lb), "values": [[t / 1000, _fmt(v)] for t, v in points]}
                for lb, points in sorted(result.items())
            ],
        }
        return ConsoleJSON({"status": "success", "data": data})

    @app.get("/api/prom/exemplars")
    def prom_exemplars(
        query: str = "", start: str | None = None, end: str | None = None
    ) -> ConsoleJSON:
        """Exemplars (trace ids) of the series the query's selectors match."""
        e = _time(end, _now())
        s = _time(start, e - 3600)
        try:
            tree = promql.parse(query)
        except promql.PromQLError as exc:
            return ConsoleJSON(_bad(str(exc)), status_code=400)
        found: list[dict[str, Any]] = []
        for sel in promql.selectors(tree):
            found += exemplars(store.reader(), sel.matchers, int(s * 1e9), int(e * 1e9))
        return ConsoleJSON({"status": "success", "data": found})

    @app.get("/api/prom/targets")
    def prom_targets() -> ConsoleJSON:
        scraper = state.scraper
        if scraper is None:
            return ConsoleJSON({"targets": [], "interval_seconds": None})
        return ConsoleJSON(
            {
                "interval_seconds": scraper.interval,
                "scrapes": scraper.scrapes,
                "cpu_seconds": round(scraper.cpu_seconds, 3),
                "targets": [vars(t) for t in scraper.states.values()],
            }
        )

    @app.get("/api/alerts")
    def alerts() -> ConsoleJSON:
        """The rules of deploy/prometheus/rules with their state (pending/firing/inactive)."""
        engine = state.engine
        if engine is None:
            return ConsoleJSON({"rules": [], "evaluated_at": None})
        at = engine.evaluated_at_ms
        rules = engine.snapshot()
        conn = store.reader()
        for rule in rules:
            for alert in rule["alerts"]:
                alert["examples"] = _examples(conn, alert["labels"], alert["active_since"])
        return ConsoleJSON(
            {
                "rules": rules,
                "evaluated_at": at / 1000 if at is not None else None,
                "interval_seconds": state.rules.interval if state.rules else None,
                "cpu_seconds": round(state.rules.cpu_seconds, 3) if state.rules else None,
            }
        )

    def boards() -> dict[str, dashboards.Dashboard]:
        return dashboards.load(state.deploy / "grafana" / "dashboards")

    @app.get("/api/dashboards")
    def dashboard_list() -> ConsoleJSON:
        return ConsoleJSON(
            {"dashboards": [{"uid": b.uid, "title": b.title} for b in boards().values()]}
        )

    @app.get("/api/dashboards/{uid}")
    def dashboard(
        uid: str, window: str | None = None, end: str | None = None, service: str | None = None
    ) -> ConsoleJSON:
        """The dashboard's panels filled from the running system (``window=15m``...)."""
        board = boards().get(uid)
        if board is None:
            return ConsoleJSON({"detail": f"dashboard {uid} not found"}, status_code=404)
        range_s = queries.parse_duration_seconds(window, "window") if window else None
        renderer = dashboards.Renderer(
            store.reader(),
            _source(store, state),
            end_s=_time(end, _now()),
            range_s=range_s,
            service=service or dashboards.ALL,
            scrape_s=state.scrape_seconds,
        )
        return ConsoleJSON(renderer.render(board))


def _examples(conn: Any, labels: dict[str, str], since_s: float) -> dict[str, str | None] | None:
    """The slowest and a failed trace of the service an alert names, since shortly before
    it became active: where to start looking."""
    service = labels.get("job")
    if not service:
        return None
    since_ns = int((since_s - 300) * 1e9)
    slowest = queries.find_traces(
        conn, queries.TraceFilter(service=service, since_ns=since_ns, limit=1, order="duration")
    )
    failed = queries.find_traces(
        conn, queries.TraceFilter(service=service, since_ns=since_ns, limit=1, status=2)
    )
    return {
        "slowest": slowest[0]["trace_id"] if slowest else None,
        "error": failed[0]["trace_id"] if failed else None,
    }


def _now() -> float:
    return time.time()
