"""One deadline across the chain (gateway -> user-service -> order-service -> audit-service),
against the running system of the fault package, under its steady traffic.

The gateway starts one budget per request (``REQUEST_DEADLINE_SECONDS``, 1.8 s by default;
a client's ``X-Request-Timeout-Ms`` may shorten it); every hop gets what is left, less a
margin, and spends it on its calls and its PostgreSQL waits (``services/deadline.py``).
Here: the budget shrinks hop by hop, as the spans show; with PostgreSQL hung (SIGSTOP of
the real server and its backends) or slow (a real lock on ``orders``) the chain answers a
JSON 503/504 naming the database within the budget, never late and never a 200 after it;
and every chain answered 2xx left its order in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from otel_lab.registry import CHAIN
from otel_lab.runtime.harness import RunningSystem
from tests.conftest import Console, Span, span_named, trace_id_of
from tests.faults.lab import (
    DB_PROBES,
    WORST,
    Fault,
    Outcome,
    Traffic,
    check_writes,
    frozen,
    pid_of,
)

pytestmark = pytest.mark.timeout(420)

CHAIN_SERVICES = ("gateway", *CHAIN)
BUDGET_MS = 1800  # REQUEST_DEADLINE_SECONDS's default
MARGIN_MS = 300  # services.deadline.PROPAGATION_MARGIN_SECONDS
_DB = ("database", "postgres")


def _warm(traffic: Traffic, timeout: float = 60.0) -> None:
    """Wait until the traffic's chain has answered 200 three times in a row: a service's
    first requests (new database connections, first-use code paths) can take longer than
    the whole budget on a busy machine, and this module is not about them."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        chains = [r for r in traffic.between(0, time.monotonic()) if r.probe == "chain"]
        if len(chains) >= 3 and all(r.ok for r in chains[-3:]):
            return
        time.sleep(0.2)
    raise AssertionError(f"the chain never answered 200 three times in a row: {chains[-5:]}")


def _chain(system: RunningSystem, user_id: int, **headers: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        system.url("gateway") + "/process",
        json={"user_id": user_id, "action": "deadline"},
        headers=headers,
        timeout=10,
    )
    return response, time.monotonic() - started


def _servers(spans: list[Span], service: str) -> list[Span]:
    """The service's request spans (the one with ``request.id`` ends last in its process)."""
    return [
        s
        for s in spans
        if s["service_name"] == service
        and s["kind"] == "SERVER"
        and "request.id" in s["attributes"]
    ]


def _server(spans: list[Span], service: str) -> Span:
    (server,) = _servers(spans, service)
    return server


def _served(*services: str) -> Callable[[list[Span]], bool]:
    return lambda spans: all(_servers(spans, name) for name in services)


def _budgets(spans: list[Span], services: tuple[str, ...]) -> list[int]:
    return [_server(spans, name)["attributes"]["deadline.budget_ms"] for name in services]


def _assert_shrinks(budgets: list[int], first: int) -> None:
    """Each hop got at most what its caller had, less the margin kept to answer in."""
    assert budgets[0] == first, budgets
    for caller, callee in itertools.pairwise(budgets):
        assert 0 < callee <= caller - MARGIN_MS, budgets


def _ran_out(spans: list[Span], service: str) -> list[str]:
    """The dependencies the service's request ran out of budget waiting for."""
    return [
        e["attributes"]["deadline.dependency"]
        for e in _server(spans, service)["events"]
        if e["name"] == "deadline.exceeded"
    ]


def _names_the_database(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert any(word in body["detail"].lower() for word in _DB), body
    assert body["request_id"] == response.headers["x-request-id"], body
    return body


@contextlib.contextmanager
def _watched(
    system: RunningSystem, traffic: Traffic, may_fail: dict[str, tuple[str, ...]]
) -> Iterator[None]:
    """Around a fault: afterwards, wait until the traffic is clean again (at most 30 s, so
    the next test starts on a healthy system), then check what the traffic saw: every
    answer within the fault suite's bounds, failures only where allowed and naming the
    database, and every write answered 2xx (items, and the chain's orders) in PostgreSQL."""
    started = time.monotonic()
    yield
    healed = time.monotonic()
    until = healed + 30
    while time.monotonic() < until:
        failures = [r for r in traffic.between(started, time.monotonic()) if not r.ok]
        if time.monotonic() - max([healed, *(r.end for r in failures)]) >= 3:
            break
        time.sleep(0.2)
    results = traffic.between(started, time.monotonic())
    outcome = Outcome(
        Fault("chain deadline", "postgres", "stop", may_fail=may_fail),
        started, healed, None, results, traffic.acked_writes(since=started),
        acked_orders=traffic.acked_orders(since=started),
    )  # fmt: skip
    check_writes(system, outcome)
    assert not outcome.lost and not outcome.lost_orders, (outcome.lost, outcome.lost_orders)
    violations = outcome.violations()
    assert not violations, "\n".join(violations[:20])


@contextlib.contextmanager
def _orders_locked(system: RunningSystem) -> Iterator[None]:
    """PostgreSQL slow, not dead, for the chain: a transaction holds an exclusive lock on
    ``orders``, so order-service's insert waits (users and audit_logs are served)."""
    with psycopg.connect(system.database_url.replace("+psycopg", ""), connect_timeout=5) as conn:
        conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def test_the_budget_shrinks_hop_by_hop(lab: tuple[RunningSystem, Traffic]) -> None:
    system, traffic = lab
    _warm(traffic)
    response, _ = _chain(system, 1004)
    assert response.status_code == 200, response.text
    spans = Console(system.url("console")).trace(
        trace_id_of(response), until=_served(*CHAIN_SERVICES)
    )
    _assert_shrinks(_budgets(spans, CHAIN_SERVICES), BUDGET_MS)
    # Each call's span says what was left of the budget when it was made.
    call = span_named(spans, "user-service proxy", "gateway")
    assert 0 < call["attributes"]["deadline.remaining_ms"] <= BUDGET_MS
    call = span_named(spans, "audit-service audit_logging", "order-service")
    assert call["attributes"]["deadline.remaining_ms"] < _budgets(spans, ("order-service",))[0]


def test_a_hung_database_is_a_503_or_504_naming_it_within_the_budget(
    lab: tuple[RunningSystem, Traffic],
) -> None:
    """PostgreSQL frozen: with the default budget the chain answers within it (user-service's
    own 1.5 s database deadline fires first: 503); with a client's 1 s budget, user-service
    runs out first and answers 504, and the trace shows it ran out waiting for the database."""
    system, traffic = lab
    _warm(traffic)
    with _watched(system, traffic, may_fail=DB_PROBES), frozen(pid_of(system, "postgres")):
        short, short_took = _chain(system, 1005, **{"X-Request-Timeout-Ms": "1000"})
        default, default_took = _chain(system, 1005)

    assert short.status_code == 504, short.text
    body = _names_the_database(short)
    assert body["error_type"] == "deadline_exceeded" and body["dependency"] == "database"
    assert short_took < 1.0 + (WORST - BUDGET_MS / 1000), short_took

    assert default.status_code in (503, 504), default.text
    _names_the_database(default)
    assert default_took < WORST, default_took

    spans = Console(system.url("console")).trace(
        trace_id_of(short), until=_served("gateway", "user-service")
    )
    _assert_shrinks(_budgets(spans, ("gateway", "user-service")), 1000)
    assert _ran_out(spans, "user-service") == ["database"]
    assert not [s for s in spans if s["service_name"] == "order-service"]  # never reached


def test_a_slow_statement_deep_in_the_chain_is_named_by_the_hop_that_waited(
    lab: tuple[RunningSystem, Traffic],
) -> None:
    """``orders`` locked: order-service's insert waits. With a 1 s budget order-service runs
    out first and answers 504 naming the database, which user-service and the gateway pass
    on as it is; with the default budget the server's statement timeout answers first (503).
    Either way within the budget, and no chain answers 200 late."""
    system, traffic = lab
    _warm(traffic)
    with _watched(system, traffic, may_fail={"chain": _DB}), _orders_locked(system):
        short, short_took = _chain(system, 1006, **{"X-Request-Timeout-Ms": "1000"})
        default, default_took = _chain(system, 1006)

    assert short.status_code == 504, short.text
    body = _names_the_database(short)
    assert body["service"] == "order-service" and body["step"] == "order_creation", body
    assert short_took < 1.0 + (WORST - BUDGET_MS / 1000), short_took

    assert default.status_code in (503, 504), default.text
    _names_the_database(default)
    assert default_took < WORST, default_took

    spans = Console(system.url("console")).trace(
        trace_id_of(short), until=_served("gateway", "user-service", "order-service")
    )
    _assert_shrinks(_budgets(spans, ("gateway", "user-service", "order-service")), 1000)
    assert _ran_out(spans, "order-service") == ["database"]
    assert not _ran_out(spans, "user-service")  # it got order-service's answer in time
