"""Prometheus rule files evaluated by the console: recording rules, alerts, SLO burn rates.

The rule files of ``deploy/prometheus/rules`` stay the truth: the console loads them as they
are and evaluates them with :mod:`otel_lab.console.promql` on the scraped series, with
Prometheus' alert life cycle (inactive -> pending -> firing after ``for``, resolved when
the expression returns nothing) and its ``ALERTS`` series. ``run_rule_tests`` runs a
``promtool test rules`` file with the same engine, so a test can check that the console and
promtool agree on the rule tests' inputs (``tests/console/test_alerts.py``).

Cost: a rule whose longest range is longer than an hour (the slow-burn SLO windows, 6 hours
to 3 days) is evaluated every ``slow_rule_seconds`` (``CONSOLE_SLOW_RULES_INTERVAL``, 300)
instead of every interval; its recorded value is carried in between. Those windows move by
1.4 % or less in five minutes. The 30 minute and 1 hour windows are evaluated every interval:
the fast-burn alert pairs the 1 hour window with the 5 minute one, and a 1 hour value up to
five minutes old held it back for minutes after a fault began (8 % of the window).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import yaml

from otel_lab.console import promql
from otel_lab.console.promql import NAME, Labels, Matcher, MemorySource, Series, Source

log = logging.getLogger("otel_lab.console.alerts")

DEFAULT_INTERVAL = 15.0  # prometheus.yml evaluation_interval
DEFAULT_SLOW_RULE_SECONDS = 300.0  # ConsoleConfig.slow_rules_interval
SLOW_RANGE_MS = 60 * 60 * 1000  # rules with longer windows than this are throttled
HISTORY_MS = 6 * 3600 * 1000  # recorded series and ALERTS kept in memory this long


@dataclass
class Rule:
    group: str
    kind: str  # "alert" or "record"
    name: str
    expr: str
    tree: promql.Node
    for_ms: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def longest_range_ms(self) -> int:
        return max((s.range_ms or 0 for s in promql.selectors(self.tree)), default=0)


@dataclass
class Alert:
    """One active alert instance (a rule and one label set)."""

    labels: Labels
    state: str  # pending / firing
    active_since_ms: int
    value: float
    fired_at_ms: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)


class AlertJSON(TypedDict):
    """An alert instance as ``GET /api/alerts`` shows it."""

    labels: dict[str, str]
    state: str
    active_since: float
    fired_at: float | None
    value: float | str  # NaN and infinities as text
    annotations: dict[str, str]
    resolved_at_ms: NotRequired[int]  # in recently_resolved
    examples: NotRequired[dict[str, str | None] | None]  # trace ids, added by the route


class RuleJSON(TypedDict):
    """An alert rule and its instances as ``GET /api/alerts`` shows it."""

    name: str
    group: str
    state: str
    severity: str | None
    active_since: float | None
    for_seconds: float
    expr: str
    labels: dict[str, str]
    summary: str | None
    alerts: list[AlertJSON]
    recently_resolved: list[AlertJSON]
    error: str | None


def load_rules(paths: Iterable[Path]) -> list[Rule]:
    rules: list[Rule] = []
    for path in paths:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        for group in doc.get("groups", []):
            for raw in group.get("rules", []):
                kind = "alert" if "alert" in raw else "record"
                rules.append(
                    Rule(
                        group=group["name"],
                        kind=kind,
                        name=raw[kind],
                        expr=raw["expr"],
                        tree=promql.parse(raw["expr"]),
                        for_ms=promql.parse_duration_ms(raw["for"]) if raw.get("for") else 0,
                        labels={k: str(v) for k, v in (raw.get("labels") or {}).items()},
                        annotations={k: str(v) for k, v in (raw.get("annotations") or {}).items()},
                    )
                )
    return rules


_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value)\s*\}\}")


def expand_template(text: str, labels: dict[str, str], value: float) -> str:
    """The ``{{ $labels.x }}`` / ``{{ $value }}`` part of Go templates the rules use."""

    def sub(m: re.Match[str]) -> str:
        if m[2] is not None:
            return labels.get(m[2], "")
        return f"{value:g}"

    return _TEMPLATE.sub(sub, text)


class _Combined:
    """The scraped series plus what the rules recorded and the ALERTS series."""

    def __init__(self, *sources: Source) -> None:
        self.sources = sources

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        return [s for src in self.sources for s in src.select(matchers, start_ms, end_ms)]


class _History(MemorySource):
    """In-memory series that grow one sample per evaluation (recorded rules, ALERTS)."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[Labels, Series] = {}

    def append(self, labels: Labels, t: int, value: float) -> None:
        series = self._index.get(labels)
        if series is None:
            series = self._index[labels] = Series(labels, [], [])
            self.series.append(series)
        if series.ts and series.ts[-1] >= t:
            series.ts[-1], series.vals[-1] = t, value
        else:
            series.ts.append(t)
            series.vals.append(value)
        series._resets = None

    def trim(self, before_ms: int) -> None:
        keep = []
        for s in self.series:
            i = next((k for k, t in enumerate(s.ts) if t >= before_ms), len(s.ts))
            del s.ts[:i], s.vals[:i]
            s._resets = None
            if s.ts:
                keep.append(s)
            else:
                del self._index[s.labels]
        self.series = keep


class RuleEngine:
    """Evaluates rule groups in order at given instants; keeps alert states."""

    def __init__(
        self,
        rules: list[Rule],
        source: Source,
        *,
        slow_rule_seconds: float = DEFAULT_SLOW_RULE_SECONDS,
    ) -> None:
        self.rules = rules
        self.source = source
        self.slow_rule_ms = slow_rule_seconds * 1000
        self.recorded = _History()
        self.alerts_series = _History()
        self.active: dict[str, dict[Labels, Alert]] = {
            r.name: {} for r in rules if r.kind == "alert"
        }
        self.resolved: dict[str, list[AlertJSON]] = {}
        self.errors: dict[str, str] = {}
        self.last_eval_ms: dict[int, int] = {}
        self.last_result: dict[int, promql.Vector] = {}
        self.evaluated_at_ms: int | None = None
        self.lock = threading.Lock()

    def evaluate(self, t_ms: int, *, throttle: bool = False) -> None:
        """One evaluation of every rule at ``t_ms`` (``throttle``: slow rules less often)."""
        combined = _Combined(self.source, self.recorded, self.alerts_series)
        for index, rule in enumerate(self.rules):
            slow = throttle and rule.longest_range_ms > SLOW_RANGE_MS
            last = self.last_eval_ms.get(index)
            if slow and last is not None and t_ms - last < self.slow_rule_ms:
                result = self.last_result.get(index, [])
            else:
                try:
                    value = promql.Evaluator(combined).instant(rule.tree, t_ms)
                    result = [((), value)] if isinstance(value, float) else value
                    self.errors.pop(rule.name, None)
                except promql.PromQLError as exc:
                    self.errors[rule.name] = str(exc)
                    result = []
                self.last_eval_ms[index] = t_ms
                self.last_result[index] = result
            if rule.kind == "record":
                for labels, v in result:
                    d = {k: val for k, val in labels if k != NAME}
                    d.update(rule.labels)
                    d[NAME] = rule.name
                    self.recorded.append(tuple(sorted(d.items())), t_ms, v)
            else:
                with self.lock:
                    self._update_alerts(rule, result, t_ms)
        self.evaluated_at_ms = t_ms
        self.recorded.trim(t_ms - HISTORY_MS)
        self.alerts_series.trim(t_ms - HISTORY_MS)

    def _update_alerts(self, rule: Rule, result: promql.Vector, t: int) -> None:
        active = self.active[rule.name]
        seen: set[Labels] = set()
        for labels, v in result:
            d = {k: val for k, val in labels if k != NAME}
            d.update(rule.labels)
            key = tuple(sorted(d.items()))
            seen.add(key)
            alert = active.get(key)
            if alert is None:
                alert = active[key] = Alert(key, "pending", t, v)
            alert.value = v
            alert.annotations = {
                k: expand_template(text, d, v) for k, text in rule.annotations.items()
            }
            if alert.state == "pending" and t - alert.active_since_ms >= rule.for_ms:
                alert.state, alert.fired_at_ms = "firing", t
        for key in list(active):
            if key not in seen:
                alert = active.pop(key)
                if alert.state == "firing":
                    history = self.resolved.setdefault(rule.name, [])
                    history.insert(0, {**_alert_json(alert), "resolved_at_ms": t})
                    del history[10:]
        for key, alert in active.items():
            series = dict(key)
            series.update({NAME: "ALERTS", "alertname": rule.name, "alertstate": alert.state})
            self.alerts_series.append(tuple(sorted(series.items())), t, 1.0)

    def firing(self, name: str) -> list[Alert]:
        return [a for a in self.active.get(name, {}).values() if a.state == "firing"]

    def snapshot(self) -> list[RuleJSON]:
        """Every rule with its state, for ``GET /api/alerts``."""
        out: list[RuleJSON] = []
        with self.lock:
            for rule in self.rules:
                if rule.kind != "alert":
                    continue
                alerts = list(self.active[rule.name].values())
                states = {a.state for a in alerts}
                state = "firing" if "firing" in states else "pending" if states else "inactive"
                since = min((a.active_since_ms for a in alerts), default=None)
                out.append(
                    {
                        "name": rule.name,
                        "group": rule.group,
                        "state": state,
                        "severity": rule.labels.get("severity"),
                        "active_since": since / 1000 if since is not None else None,
                        "for_seconds": rule.for_ms / 1000,
                        "expr": rule.expr,
                        "labels": rule.labels,
                        "summary": rule.annotations.get("summary"),
                        "alerts": [_alert_json(a) for a in alerts],
                        "recently_resolved": self.resolved.get(rule.name, []),
                        "error": self.errors.get(rule.name),
                    }
                )
        return out


def _alert_json(alert: Alert) -> AlertJSON:
    return {
        "labels": dict(alert.labels),
        "state": alert.state,
        "active_since": alert.active_since_ms / 1000,
        "fired_at": alert.fired_at_ms / 1000 if alert.fired_at_ms is not None else None,
        "value": alert.value if math.isfinite(alert.value) else str(alert.value),
        "annotations": alert.annotations,
    }


class RuleRunner:
    """Evaluates the engine every ``interval`` seconds in a background thread."""

    def __init__(
        self, engine_factory: Callable[[], RuleEngine], interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.engine_factory = engine_factory
        self.engine: RuleEngine | None = None
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_seconds = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-rules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _run(self) -> None:
        try:
            self.engine = self.engine_factory()
        except Exception:
            log.exception("could not load the alert rules; alerts are off")
            return
        while not self._stop.wait(self.interval):
            cpu0 = time.thread_time()
            try:
                self.engine.evaluate(time.time_ns() // 1_000_000, throttle=True)
            except Exception:
                log.exception("rule evaluation failed")
            self.cpu_seconds += time.thread_time() - cpu0


# ============================================================================ promtool tests

_NUMBER = r"[-+]?(?:[\d.]+(?:e[-+]?\d+)?|Inf|NaN)"
_EXPANDING = re.compile(rf"({_NUMBER})(?:([-+][\d.]+(?:e[-+]?\d+)?)?x(\d+))?", re.I)


def expand_values(text: str) -> list[float | str | None]:
    """promtool's input_series notation: ``1 1 0x10``, ``0+45x20``, ``_x3``, ``stale``."""
    out: list[float | str | None] = []
    for token in str(text).split():
        m = re.fullmatch(r"(_|stale)(?:x(\d+))?", token)
        if m:
            value: float | str | None = None if m[1] == "_" else "stale"
            out += [value] * (int(m[2]) if m[2] else 1)
            continue
        m = _EXPANDING.fullmatch(token)
        if not m:
            raise ValueError(f"bad input_series value {token!r}")
        start = float(m[1])
        if m[3] is None:
            out.append(start)
            continue
        step = float(m[2]) if m[2] else 0.0
        out += [start + step * i for i in range(int(m[3]) + 1)]
    return out


def _series_labels(text: str) -> dict[str, str]:
    tree = promql.parse(text)
    if not isinstance(tree, promql.Selector):
        raise ValueError(f"not a series: {text!r}")
    return {m.name: m.value for m in tree.matchers}


def run_rule_tests(test_file: Path) -> list[str]:
    """Run a ``promtool test rules`` file with the console's engine; the failures (empty:
    all pass)."""
    doc = yaml.safe_load(test_file.read_text())
    rule_paths = [(test_file.parent / p).resolve() for p in doc.get("rule_files", [])]
    rules = load_rules(rule_paths)
    eval_interval = promql.parse_duration_ms(str(doc.get("evaluation_interval", "1m")))
    failures: list[str] = []
    for test in doc.get("tests", []):
        name = test.get("name", "?")
        interval = promql.parse_duration_ms(str(test.get("interval", "1m")))
        source = MemorySource()
        for item in test.get("input_series", []):
            labels = _series_labels(item["series"])
            ts: list[int] = []
            vals: list[float] = []
            stale: list[int] = []
            for i, v in enumerate(expand_values(item["values"])):
                if v is None:
                    continue
                if v == "stale":
                    stale.append(i * interval)
                    continue
                ts.append(i * interval)
                vals.append(float(v))
            source.series.append(Series(tuple(sorted(labels.items())), ts, vals, stale))
        engine = RuleEngine(rules, source)
        checks: dict[int, list[tuple[str, Any]]] = {}
        for case in test.get("alert_rule_test", []):
            t = promql.parse_duration_ms(str(case["eval_time"]))
            checks.setdefault(t, []).append(("alert", case))
        for case in test.get("promql_expr_test", []):
            t = promql.parse_duration_ms(str(case["eval_time"]))
            checks.setdefault(t, []).append(("expr", case))
        end = max(checks, default=0)
        t = 0
        while t <= end:
            engine.evaluate(t)
            for at in [k for k in checks if t <= k < t + eval_interval]:
                for kind, case in checks.pop(at):
                    failures += _check(name, kind, case, engine, at)
            t += eval_interval
    return failures


def _check(test: str, kind: str, case: dict[str, Any], engine: RuleEngine, t: int) -> list[str]:
    where = f"{test} @ {case['eval_time']}"
    if kind == "alert":
        got = sorted(
            (sorted((k, v) for k, v in a.labels), sorted(a.annotations.items()))
            for a in engine.firing(case["alertname"])
        )
        want = sorted(
            (
                sorted((str(k), str(v)) for k, v in (e.get("exp_labels") or {}).items()),
                sorted((str(k), str(v)) for k, v in (e.get("exp_annotations") or {}).items()),
            )
            for e in case.get("exp_alerts") or []
        )
        if got != want:
            return [f"{where}: alert {case['alertname']}: got {got}, want {want}"]
        return []
    combined = _Combined(engine.source, engine.recorded, engine.alerts_series)
    value = promql.Evaluator(combined).instant(promql.parse(case["expr"]), t)
    vector = [((), value)] if isinstance(value, float) else value
    got_map = {tuple(sorted(lb)): v for lb, v in vector}
    want_map = {
        tuple(sorted(_series_labels(e["labels"]).items())) if e.get("labels") else (): float(
            e["value"]
        )
        for e in case.get("exp_samples") or []
    }
    problems = []
    if set(got_map) != set(want_map):
        problems.append(f"{where}: {case['expr']}: series {sorted(got_map)} != {sorted(want_map)}")
    for key, wanted in want_map.items():
        found = got_map.get(key)
        if found is not None and not (
            math.isclose(found, wanted, rel_tol=1e-6, abs_tol=1e-9)
            or (math.isnan(found) and math.isnan(wanted))
        ):
            problems.append(f"{where}: {case['expr']} {dict(key)}: got {found}, want {wanted}")
    return problems
