"""The Prometheus side of a running console: the scraper, the alert rules runner and where
the stack's rule files and dashboards are. The routes are in :mod:`otel_lab.console.routes`
(``prom``, ``alerts``, ``dashboards``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from otel_lab.console import dashboards, promql
from otel_lab.console.alerts import DEFAULT_SLOW_RULE_SECONDS, RuleEngine, RuleRunner, load_rules
from otel_lab.console.config import checkout_deploy_dir
from otel_lab.console.scrape import Scraper, StoreSource
from otel_lab.console.store import Store


@dataclass
class PromState:
    """The scraper and the rules runner of a running console (either may be absent)."""

    scraper: Scraper | None = None
    rules: RuleRunner | None = None
    deploy: Path = field(default_factory=checkout_deploy_dir)  # ConsoleConfig.deploy_dir

    @property
    def engine(self) -> RuleEngine | None:
        return self.rules.engine if self.rules else None

    @property
    def scrape_seconds(self) -> float:
        return self.scraper.interval if self.scraper else dashboards.DEFAULT_SCRAPE_SECONDS


def rules_runner(
    store: Store,
    deploy: Path,
    interval: float,
    slow_rule_seconds: float = DEFAULT_SLOW_RULE_SECONDS,
) -> RuleRunner:
    """Evaluates ``deploy/prometheus/rules/*.yml`` over the store, on its own connection."""

    def factory() -> RuleEngine:
        paths = sorted((deploy / "prometheus" / "rules").glob("*.yml"))
        source = StoreSource(store.open_reader())
        return RuleEngine(load_rules(paths), source, slow_rule_seconds=slow_rule_seconds)

    return RuleRunner(factory, interval)


def source(store: Store, state: PromState) -> promql.Source:
    """The scraped series, plus the recorded rules' and ALERTS series when rules run."""
    base = StoreSource(store.reader())
    engine = state.engine
    if engine is None:
        return base
    from otel_lab.console.alerts import _Combined

    return _Combined(base, engine.recorded, engine.alerts_series)
