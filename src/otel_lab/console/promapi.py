"""The Prometheus side of a running console: the scraper, the alert rules runner and where
the stack's rule files and dashboards are. The routes are in :mod:`otel_lab.console.routes`
(``prom``, ``alerts``, ``dashboards``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import otel_lab
from otel_lab.console import dashboards, promql
from otel_lab.console.alerts import RuleEngine, RuleRunner, load_rules
from otel_lab.console.scrape import Scraper, StoreSource
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


def source(store: Store, state: PromState) -> promql.Source:
    """The scraped series, plus the recorded rules' and ALERTS series when rules run."""
    base = StoreSource(store.reader())
    engine = state.engine
    if engine is None:
        return base
    from otel_lab.console.alerts import _Combined

    return _Combined(base, engine.recorded, engine.alerts_series)
