"""The console's rule engine and ``promtool test rules`` agree on the rule tests' inputs.

deploy/prometheus/tests/*.yml are the rule tests promtool runs (tests/deploy/test_prometheus.py);
here the same files run through the console's engine (otel_lab.console.alerts), which loads the
same rule files. Both pass on the files as committed, and both fail on a copy whose expectation
was changed, so the comparison can fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from otel_lab.console.alerts import RuleEngine, expand_values, load_rules, run_rule_tests
from otel_lab.console.promql import MemorySource

REPO = Path(__file__).resolve().parents[2]
RULE_TESTS = sorted((REPO / "deploy" / "prometheus" / "tests").glob("*.yml"))
RULES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))


def promtool(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not found: apt-get install prometheus")
    return subprocess.run(
        [binary, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_console_and_promtool_agree(test_file: Path) -> None:
    result = promtool(test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_rule_tests(test_file) == []


def test_both_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    """A changed expected value and a too-early alert: promtool and the console both object."""
    source = (REPO / "deploy" / "prometheus" / "tests" / "alerts_test.yml").read_text()
    assert "value: 0.25" in source and "eval_time: 3m" in source
    wrong = source.replace("value: 0.25", "value: 0.3").replace(
        "../rules/", f"{REPO}/deploy/prometheus/rules/"
    )
    path = tmp_path / "wrong_test.yml"
    path.write_text(wrong)
    assert promtool(path).returncode != 0
    failures = run_rule_tests(path)
    assert len(failures) == 1 and "got 0.25, want 0.3" in failures[0], failures


def test_alert_life_cycle() -> None:
    """pending on the first evaluation that returns the series, firing after ``for``,
    resolved (and listed as such) when the expression returns nothing."""
    rules = [r for r in load_rules(RULES) if r.name == "TargetDown"]
    source = MemorySource()
    minute = 60_000
    values = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    source.add({"__name__": "up", "job": "api", "instance": "a:1"},
               [i * minute for i in range(len(values))], values)  # fmt: skip
    engine = RuleEngine(rules, source)
    states = []
    for i in range(len(values)):
        engine.evaluate(i * minute)
        (rule,) = engine.snapshot()
        states.append(rule["state"])
    assert states == ["inactive", "pending", "pending", "firing", "firing", "inactive", "inactive"]
    (rule,) = engine.snapshot()
    (resolved,) = rule["recently_resolved"]
    assert resolved["labels"] == {"job": "api", "instance": "a:1", "severity": "critical"}
    assert resolved["active_since"] == 60 and resolved["fired_at"] == 180
    assert resolved["annotations"]["summary"] == "api (a:1) cannot be scraped"


def test_input_series_notation() -> None:
    assert expand_values("1 1 0x2") == [1, 1, 0, 0, 0]
    assert expand_values("0+45x2 _ stale 10-5x1") == [0, 45, 90, None, "stale", 10, 5]


def _slow_chain_after(history_s: int) -> MemorySource:
    """1 request/s through the gateway's chain route, all within 500 ms for ``history_s``
    seconds, then all slower (the slow-database fault), scraped every 15 s for 40 minutes."""
    source = MemorySource()
    labels = {"job": "gateway", "instance": "gw:1", "method": "POST", "path": "/api/v1/process"}
    ts = list(range(0, (history_s + 40 * 60) * 1000 + 1, 15_000))
    source.add({"__name__": "request_latency_seconds_count", **labels}, ts,
               [t / 1000 for t in ts])  # fmt: skip
    source.add({"__name__": "request_latency_seconds_bucket", "le": "0.5", **labels}, ts,
               [min(t / 1000, history_s) for t in ts])  # fmt: skip
    return source


def _first_active(source: MemorySource, start_s: int, throttle: bool) -> int:
    engine = RuleEngine(load_rules(RULES), source)  # the shipped 5 minute slow-rule interval
    for t in range(start_s * 1000, (start_s + 40 * 60) * 1000, 15_000):
        engine.evaluate(t, throttle=throttle)
        rule = next(r for r in engine.snapshot() if r["name"] == "SLOLatencyBurnRateFast")
        if rule["state"] != "inactive":
            return t // 1000
    raise AssertionError("SLOLatencyBurnRateFast never became active")


def test_fast_burn_alert_is_not_held_back_by_the_slow_rule_interval() -> None:
    """After 6 hours of fast requests every request turns slow: the 1 hour window passes
    14.4 % after about 8.6 minutes (the 6 hour pair needs 21.6). Rules with windows longer
    than an hour run every 5 minutes; the fast-burn pair must not wait for that: pending at
    the same evaluation as with every rule evaluated every 15 s."""
    start = 6 * 3600
    source = _slow_chain_after(start)
    every_time = _first_active(source, start, throttle=False)
    assert 8 * 60 < every_time - start < 10 * 60, every_time - start
    assert _first_active(source, start, throttle=True) == every_time
