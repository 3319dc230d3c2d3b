"""The request's deadline in-process: the header's parsing, the middleware that starts the
budget, and how ``Downstream`` spends it (timeouts capped, retries that cannot fit not made,
the budget sent on), against real HTTP servers on loopback ports.

The chain under a hung or slow PostgreSQL, end to end: ``tests/faults/test_chain_deadline.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from fastapi import FastAPI

from otel_lab.runtime.procs import free_port
from otel_lab.services import deadline
from otel_lab.services.base import create_service
from otel_lab.services.downstream import (
    BreakerState,
    Downstream,
    DownstreamError,
    DownstreamTimeoutError,
    RetryPolicy,
    create_client,
)
from otel_lab.telemetry import Telemetry
from tests.inprocess.conftest import Recorded, closed_url, run, served, settings_for

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- the header


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1500", 1.5), (b"250", 0.25), ("0", 0.0), (" 40 ", 0.04), ("99999999", 99999.999)],
)
def test_valid_header_values(value: str | bytes, seconds: float) -> None:
    assert deadline.parse_timeout_ms(value) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "-5", "+5", "1.5", "1e3", "abc", "1500ms", "0x10", "\u0669\u0669",
     "\uff19\uff19", "123456789", b"\xff\xfe", "1 5", "15\r\n"],
)  # fmt: skip
def test_malformed_header_values_are_ignored(value: str | bytes | None) -> None:
    assert deadline.parse_timeout_ms(value) is None


def test_the_budget_sent_on_keeps_a_margin() -> None:
    assert deadline.header_value() is None  # no request, no header
    with deadline.within(1.0):
        sent = int(deadline.header_value() or -1)
        assert 1000 - 300 - 50 < sent <= 1000 - 300
        with deadline.within(5.0):  # nested: the sooner deadline wins
            assert deadline.remaining() <= 1.0
    with deadline.within(0.1):  # a short budget: half is kept, half sent on
        assert 40 < int(deadline.header_value() or -1) <= 50
    with deadline.within(0):
        assert deadline.header_value() == "0"
    assert not deadline.active()


# --------------------------------------------------------------------------- the middleware


def _app(recorded: Recorded, budget: float) -> FastAPI:
    settings = settings_for(REQUEST_DEADLINE_SECONDS=budget)
    app = create_service("deadline-test", settings, title="t", telemetry=recorded.telemetry)

    @app.get("/left")
    async def left() -> dict[str, float]:
        return {"left": deadline.remaining()}

    return app


Answer = tuple[int, dict[str, Any], float]  # status, body, seconds the request took


def _get(app: FastAPI, headers: dict[str, str] | list[tuple[bytes, bytes]]) -> Answer:
    async def go() -> Answer:
        async with served(app) as client:
            began = time.monotonic()
            response = await client.get("/left", headers=headers)
            return response.status_code, response.json(), time.monotonic() - began

    return run(go())


def _whole_budget_less_the_request(budget_s: float, left_s: float, took_s: float) -> bool:
    """The handler saw the budget less no more than the request took: the budget starts with
    the request (bounded by the client's clock, so a loaded machine cannot fail it)."""
    return budget_s - took_s <= left_s <= budget_s


@pytest.mark.parametrize(
    ("header", "budget_ms"),
    [(None, 1000), ("250", 250), ("5000", 1000)],  # a header may shorten, never lengthen
)
def test_the_middleware_starts_the_budget(
    recorded: Recorded, header: str | None, budget_ms: int
) -> None:
    status, body, took = _get(_app(recorded, 1.0), {deadline.HEADER: header} if header else {})
    assert status == 200
    assert _whole_budget_less_the_request(budget_ms / 1000, body["left"], took), (body, took)
    attributes = recorded.server_span().attributes or {}
    assert attributes["deadline.budget_ms"] == budget_ms
    assert "deadline.header_ignored" not in attributes


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1.5", b"123456789", b"\xff", b""])
def test_a_malformed_header_is_ignored_not_an_error(recorded: Recorded, value: bytes) -> None:
    status, body, took = _get(_app(recorded, 1.0), [(deadline.HEADER.encode(), value)])
    assert status == 200, body
    assert _whole_budget_less_the_request(1.0, body["left"], took), (body, took)
    attributes = recorded.server_span().attributes or {}
    assert attributes["deadline.budget_ms"] == 1000
    assert attributes["deadline.header_ignored"] is True


def test_no_budget_left_on_arrival_is_a_json_504(recorded: Recorded) -> None:
    status, body, _ = _get(_app(recorded, 1.0), {deadline.HEADER: "0", "X-Request-ID": "late-1"})
    assert status == 504
    assert body["error_type"] == "deadline_exceeded"
    assert body["request_id"] == "late-1"
    assert "deadline" in body["detail"]
    server = recorded.server_span()
    assert [e.name for e in server.events] == ["deadline.exceeded", "exception"]
    assert (server.attributes or {})["error.type"] == "deadline_exceeded"


# --------------------------------------------------------------------------- Downstream


class Upstream:
    """A real HTTP server on a loopback port: answers ``status`` after ``delay`` seconds and
    records the budget each request carried."""

    def __init__(self, delay: float, status: int = 200) -> None:
        self.delay, self.status = delay, status
        self.budgets: list[str | None] = []
        self.url = f"http://127.0.0.1:{free_port()}"

    async def handle(self, request: web.Request) -> web.Response:
        self.budgets.append(request.headers.get(deadline.HEADER))
        await asyncio.sleep(self.delay)
        return web.json_response({"detail": "as asked"}, status=self.status)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Upstream]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(self.url.rsplit(":", 1)[1])).start()
        try:
            yield self
        finally:
            await runner.cleanup()


_RETRY = RetryPolicy(attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.02)


def _with_downstream(
    url: str, test: Callable[[Downstream], Awaitable[None]], **settings: object
) -> None:
    async def go() -> None:
        values = settings_for(**settings)
        untraced = Telemetry(enabled=False)
        async with create_client(values, untraced) as client:
            await test(
                Downstream("slow", url, client, settings=values, retry=_RETRY, telemetry=untraced)
            )

    run(go())


def test_a_slow_downstream_gets_only_what_is_left() -> None:
    """Per-attempt timeout 5 s, budget 0.5 s: the call ends after about 0.5 s, and the
    downstream was told it had 0.25 s (the margin kept to answer in: half, under 0.6 s)."""
    upstream = Upstream(delay=3.0)

    async def test(slow: Downstream) -> None:
        async with upstream.running():
            with deadline.within(0.5):
                started = time.monotonic()
                with pytest.raises(DownstreamTimeoutError) as failure:
                    await slow.request("GET", "/x", step="read")
                elapsed = time.monotonic() - started
        assert 0.4 < elapsed < 1.0, elapsed
        assert failure.value.status_code == 504
        assert "the request's deadline ran out" in failure.value.detail
        assert failure.value.attempts == 1  # timeouts are not retried
        (sent,) = upstream.budgets
        assert 150 < int(sent or 0) <= 250

    _with_downstream(upstream.url, test, DOWNSTREAM_TIMEOUT_SECONDS=5)


def test_no_retry_that_the_budget_cannot_fit() -> None:
    """A 503 after 0.3 s, 0.55 s budget: another try would not finish in the 0.25 s left, so
    the 503 is the answer. Without a deadline the same call is tried three times."""
    upstream = Upstream(delay=0.3, status=503)

    async def test(slow: Downstream) -> None:
        async with upstream.running():
            with deadline.within(0.55):
                reply = await slow.request("GET", "/x", step="read")
            assert reply.status_code == 503
            assert len(upstream.budgets) == 1
            await slow.request("GET", "/x", step="read")
            assert len(upstream.budgets) == 1 + 3
            assert upstream.budgets[1:] == [None] * 3  # no deadline, no header

    _with_downstream(upstream.url, test)


def test_a_refused_connection_is_still_retried_within_the_budget() -> None:
    async def test(down: Downstream) -> None:
        with deadline.within(1.0), pytest.raises(DownstreamError) as failure:
            await down.request("GET", "/x", step="read")
        assert failure.value.attempts == 3

    _with_downstream(closed_url(), test)


def test_no_call_when_the_budget_has_run_out() -> None:
    """Nothing left: the call is not made and does not count against the downstream's
    breaker (it did nothing wrong). A short budget is still sent on, halved."""
    upstream = Upstream(delay=0.0)

    async def test(fast: Downstream) -> None:
        async with upstream.running():
            for _ in range(fast.breaker.failure_threshold + 1):
                with deadline.within(0), pytest.raises(DownstreamTimeoutError) as failure:
                    await fast.request("GET", "/x", step="read")
                assert "not called" in failure.value.detail
            assert upstream.budgets == []
            assert fast.breaker.state is BreakerState.CLOSED
            with deadline.within(0.15):
                assert (await fast.request("GET", "/x", step="read")).status_code == 200
            (sent,) = upstream.budgets
            assert 40 < int(sent or 0) <= 75

    _with_downstream(upstream.url, test)


@pytest.mark.parametrize(("status", "expected"), [(503, 503), (504, 504), (500, 502)])
def test_an_upstream_503_or_504_is_passed_on_not_turned_into_a_502(
    status: int, expected: int
) -> None:
    upstream = Upstream(delay=0.0, status=status)

    async def test(slow: Downstream) -> None:
        async with upstream.running():
            with pytest.raises(DownstreamError) as failure:
                await slow.request(
                    "POST", "/x", step="write", raise_for_status=True, idempotent=False
                )
        assert failure.value.status_code == expected
        assert f"(HTTP {status})" in failure.value.detail

    _with_downstream(upstream.url, test)
