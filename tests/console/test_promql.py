"""The console's PromQL subset on samples given in memory (values worked out by hand, or
as Prometheus 2.x documents them). Parity with a real Prometheus on the same samples:
tests/deploy/test_dashboard_data.py::test_console_evaluator_matches_prometheus."""

from __future__ import annotations

import math

import pytest

from otel_lab.console.promql import Evaluator, MemorySource, PromQLError, Series, parse

S = 1000  # ms


def source() -> MemorySource:
    src = MemorySource()
    ts = [i * 10 * S for i in range(13)]  # 0..120 s every 10 s
    # 1 request/s on a 200 route and 0.5/s on a 500 route, with a counter reset at 60 s.
    src.add({"__name__": "requests_total", "job": "api", "status": "200"}, ts,
            [10.0 * i for i in range(7)] + [10.0 * i for i in range(1, 7)])  # fmt: skip
    src.add({"__name__": "requests_total", "job": "api", "status": "500"}, ts,
            [5.0 * i for i in range(13)])  # fmt: skip
    for le, share in (("0.1", 0.5), ("0.5", 0.9), ("+Inf", 1.0)):
        src.add({"__name__": "lat_bucket", "job": "api", "le": le}, ts,
                [100.0 * share * i for i in range(13)])  # fmt: skip
    src.add({"__name__": "depth", "job": "worker", "queue": "celery"}, ts, [3.0] * 13)
    return src


def run(query: str, t: int = 120 * S) -> dict[tuple, float] | float:
    value = Evaluator(source()).instant(parse(query), t)
    if isinstance(value, float):
        return value
    return {tuple(sorted((k, v) for k, v in lb if k != "__name__")): v for lb, v in value}


def test_rate_handles_counter_resets_and_extrapolates() -> None:
    # Samples cover the whole 60 s window [60 s, 120 s] exactly: no extrapolation needed.
    result = run('rate(requests_total{status="200"}[60s])')
    assert result == {(("job", "api"), ("status", "200")): pytest.approx(1.0)}
    assert run('increase(requests_total{status="500"}[60s])') == {
        (("job", "api"), ("status", "500")): pytest.approx(30.0)
    }


def test_aggregation_and_arithmetic() -> None:
    assert run("sum(rate(requests_total[60s]))") == {(): pytest.approx(1.5)}
    ratio = run(
        'sum by (job) (rate(requests_total{status=~"5.."}[60s])) '
        "/ sum by (job) (rate(requests_total[60s]))"
    )
    assert ratio == {(("job", "api"),): pytest.approx(1 / 3)}


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    # 50 % below 0.1, 90 % below 0.5: the 0.7 quantile is half-way through (0.1, 0.5].
    result = run("histogram_quantile(0.7, sum by (le) (rate(lat_bucket[60s])))")
    assert result == {(): pytest.approx(0.3)}
    assert run("histogram_quantile(0.99, sum by (le) (rate(lat_bucket[60s])))") == {
        (): pytest.approx(0.5)  # the +Inf bucket answers with the highest finite bound
    }


def test_set_operators_and_comparisons() -> None:
    missing = 'sum by (job) (rate(requests_total{status="404"}[60s]))'
    fallback = f"{missing} or sum by (job) (rate(requests_total[60s])) * 0"
    assert run(fallback) == {(("job", "api"),): 0.0}
    assert run("depth > 2") == {(("job", "worker"), ("queue", "celery")): 3.0}
    assert run("depth > 5") == {}
    assert run("depth > bool 5") == {(("job", "worker"), ("queue", "celery")): 0.0}
    assert run("max by (queue) (depth) > 0 unless on () sum(rate(requests_total[1m])) > 0") == {}
    assert run("1 - 0.25 * 2") == 0.5


def test_stale_marker_ends_a_series() -> None:
    src = MemorySource([Series((("__name__", "g"),), [0, 10 * S], [1.0, 2.0], [20 * S])])
    assert Evaluator(src).instant(parse("g"), 15 * S) == [((("__name__", "g"),), 2.0)]
    assert Evaluator(src).instant(parse("g"), 25 * S) == []
    # Without a marker, a sample counts for 5 minutes (the look-back), and then not.
    src = MemorySource([Series((("__name__", "g"),), [0], [1.0])])
    assert Evaluator(src).instant(parse("g"), 299 * S) != []
    assert Evaluator(src).instant(parse("g"), 301 * S) == []


def test_range_evaluation_steps() -> None:
    result = Evaluator(source()).range(parse("sum(depth)"), 60 * S, 120 * S, 30 * S)
    assert result == {(): [(60 * S, 3.0), (90 * S, 3.0), (120 * S, 3.0)]}


@pytest.mark.parametrize(
    "query",
    ["sum(", "rate(depth)", 'x{job=~"("}', "depth[5m] + 1", "nosuchfn(depth)", '{job=~".*"}'],
)
def test_bad_queries_are_errors(query: str) -> None:
    with pytest.raises(PromQLError):
        Evaluator(source()).instant(parse(query), 120 * S)


def test_division_by_zero_is_nan_or_inf() -> None:
    assert math.isnan(run("0 / 0"))  # type: ignore[arg-type]
    assert run("1 / 0") == math.inf


@pytest.mark.parametrize("query", ["absent( )", "- x[5m]", "(" * 3000 + "1" + ")" * 3000])
def test_odd_queries_are_query_errors_not_crashes(query: str) -> None:
    """Whatever a user types is a PromQLError (the API's 400), never another exception."""
    with pytest.raises(PromQLError):
        Evaluator(source()).instant(parse(query), 120 * S)


def _varied_source() -> MemorySource:
    """Series that start late, pause, go stale, reset and idle: the edge cases of windows."""
    src = source()
    young = [i * 10 * S for i in range(9, 13)]  # from 90 s only
    src.add({"__name__": "requests_total", "job": "gateway", "status": "200"}, young,
            [1.0, 4.0, 9.0, 16.0])  # fmt: skip
    gap = [0, 10 * S, 20 * S, 70 * S, 80 * S, 110 * S]
    src.add({"__name__": "requests_total", "job": "user", "status": "200"}, gap,
            [0.0, 2.0, 2.0, 1.0, 7.0, 7.0])  # fmt: skip
    src.series[-1].stale = [30 * S, 90 * S]
    src.add({"__name__": "requests_total", "job": "idle", "status": "200"},
            [i * 10 * S for i in range(13)], [42.0] * 13)  # fmt: skip
    return src


@pytest.mark.parametrize(
    "query",
    [
        "rate(requests_total[30s])",
        "increase(requests_total[45s])",
        "delta(depth[1m])",
        "irate(requests_total[25s])",
        "idelta(requests_total[1m])",
        "avg_over_time(requests_total[40s])",
        "sum_over_time(requests_total[40s])",
        "min_over_time(requests_total[15s])",
        "max_over_time(requests_total[15s])",
        "count_over_time(requests_total[30s])",
        "last_over_time(requests_total[20s])",
        "rate(requests_total[30s] offset 20s)",
        "sum by (job) (rate(requests_total[30s])) / sum by (job) (increase(requests_total[1m]))",
        "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[30s])))",
        "requests_total - requests_total offset 10s",
    ],
)
def test_a_range_query_equals_an_instant_query_at_each_step(query: str) -> None:
    """``Evaluator.range`` evaluates range functions for all steps at once (and skips the
    steps a series cannot reach); it must give what one instant query per step gives."""
    src = _varied_source()
    tree = parse(query)
    ranged = Evaluator(src).range(tree, 0, 150 * S, 5 * S)
    by_step: dict[int, dict] = {}
    for labels, points in ranged.items():
        for t, v in points:
            by_step.setdefault(t, {})[labels] = v
    for t in range(0, 150 * S + 1, 5 * S):
        value = Evaluator(src).instant(tree, t)
        expected = {(): value} if isinstance(value, float) else dict(value)
        got = by_step.get(t, {})
        assert got.keys() == expected.keys(), (t, got, expected)
        for labels, v in expected.items():
            assert got[labels] == v or (math.isnan(v) and math.isnan(got[labels])), (t, labels)
    assert ranged, "the query returned nothing: the test would not check anything"


def test_evaluators_of_one_dashboard_share_their_range_function_results() -> None:
    """p50 and p95 of a dashboard rate the same buckets: the second query reuses the first's
    rates (one entry in ``shared``) and still gives what it gives on its own."""
    src, shared = _varied_source(), {}
    queries = [f"histogram_quantile({q}, sum by (le) (rate(lat_bucket[30s])))" for q in (0.5, 0.95)]
    for query in queries:
        alone = Evaluator(src).range(parse(query), 0, 150 * S, 5 * S)
        assert Evaluator(src, shared=shared).range(parse(query), 0, 150 * S, 5 * S) == alone
        assert alone
    assert len(shared) == 1
