"""Prometheus: scrape configuration, recording and alerting rules, and their unit tests."""

from __future__ import annotations

import re

import pytest

from otel_lab.registry import metrics_jobs

from .conftest import (
    COLLECTOR_CONFIG,
    COMPOSE_FILE,
    PROMETHEUS_DIR,
    collector_metric_names,
    load_yaml,
    require_tool,
    run,
)

CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))

# Series the services and the worker expose on /metrics, the ones the Collector's connectors
# push, plus the Collector's own telemetry and Prometheus' synthetic series. A rule that names
# anything else has a typo.
_HISTOGRAMS = (
    "request_latency_seconds",
    "db_operation_seconds",
    "api_operation_seconds",
    "celery_task_duration_seconds",
)
KNOWN_METRICS = {
    "up",
    "ALERTS",
    "requests_total",
    "errors_total",
    "concurrent_requests",
    "cache_hits_total",
    "cache_misses_total",
    "circuit_breaker_state",
    "worker_queue_depth",
    "celery_tasks_total",
    "process_cpu_seconds_total",  # prometheus_client's process collector
    "process_resident_memory_bytes",
    *(f"{h}_{suffix}" for h in _HISTOGRAMS for suffix in ("bucket", "sum", "count")),
    *collector_metric_names(load_yaml(COLLECTOR_CONFIG)),
}


def _rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            rules += group["rules"]
    return rules


def _metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (good enough for our rules)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        name = match.group(0)
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or name in {
            "and",
            "or",
            "unless",
            "bool",
            "offset",
            "e",
            "Inf",
            "NaN",
        }:
            continue
        names.add(name)
    return names


# ----------------------------------------------------------------------------- real tool
def test_promtool_check_config() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(CONFIG)], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule_files glob found the rules (promtool reports how many files).
    assert f"{len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file) -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "test", "rules", str(test_file)], cwd=test_file.parent, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- coverage
def test_every_rule_has_a_unit_test() -> None:
    """Each alert fires in some test; each recording rule is asserted in some test."""
    fired: set[str] = set()
    asserted_exprs: list[str] = []
    for path in TEST_FILES:
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
            for case in test.get("promql_expr_test", []):
                asserted_exprs.append(case["expr"])
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] in fired, f"alert {rule['alert']} is never shown to fire in a test"
        else:
            assert any(rule["record"] in expr for expr in asserted_exprs), (
                f"recording rule {rule['record']} has no promql_expr_test"
            )


def test_every_test_file_is_wired_to_existing_rules() -> None:
    for path in TEST_FILES:
        for rule_file in load_yaml(path)["rule_files"]:
            assert (path.parent / rule_file).resolve() in {p.resolve() for p in RULE_FILES}


def test_rules_only_use_known_metrics() -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        names = _metric_names(rule["expr"])
        unknown = {
            n for n in names if n not in KNOWN_METRICS | recorded and not n.startswith("otelcol_")
        }
        # {__name__=~"..."} selectors are stripped with the other matchers; nothing else may remain.
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown series {unknown}"


def test_alerts_have_severity_and_summary() -> None:
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule[
                "alert"
            ]


def test_slo_alerts_are_multi_window() -> None:
    """Each burn-rate alert pairs a long and a short window for every burn rate it checks."""
    for rule in _rules():
        if rule.get("alert", "").startswith("SLO"):
            windows = re.findall(r"ratio_rate(\w+)\{", rule["expr"])
            assert len(windows) == 4 and len(set(windows)) == 4, rule["alert"]


# ----------------------------------------------------------------------------- scrape targets
def test_scrape_targets_match_compose() -> None:
    """Every service is scraped by its compose name and port, and the job label is that name."""
    config = load_yaml(CONFIG)
    compose = load_yaml(COMPOSE_FILE)["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {job: f"{job}:{port}" for job, port in metrics_jobs().items()}
    expected["otel-collector"] = "otel-collector:8888"
    for job, target in expected.items():
        assert job in jobs, f"no scrape job {job}"
        targets = [t for sc in jobs[job]["static_configs"] for t in sc["targets"]]
        assert targets == [target]
    for job in jobs.values():
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in compose, (
                    f"{job['job_name']}: {host} is no compose service"
                )
