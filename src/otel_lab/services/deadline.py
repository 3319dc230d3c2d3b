"""The request's deadline: one budget per request, set where it enters a service, spent by
every call it makes, sent on to the next hop.

Each hop's timeouts and retries used to add up: a chain request crosses the gateway,
user-service, order-service and audit-service, each with its own per-call deadlines, and
the fault suite once saw a 200 after 4.29 s. Now, as gRPC does with ``grpc-timeout`` and
Envoy with ``x-envoy-expected-rq-timeout-ms``, the budget travels with the request as the
time *left*, in milliseconds (relative, so the hosts' clocks need not agree, unlike
Finagle's absolute deadline):

- :class:`DeadlineMiddleware` (every service, ``services.base``) starts the deadline: the
  ``X-Request-Timeout-Ms`` header's budget when a caller sent one, never more than
  ``REQUEST_DEADLINE_SECONDS`` (1.8 s, under the 2 s target), which is also the budget of
  a request that comes without one (at the gateway: every client's). A header can only
  shorten the budget; a malformed one is ignored (the span says so), never a 4xx or 500;
- ``services.downstream`` caps every attempt's timeout by :func:`remaining`, makes no retry
  the budget cannot fit, and sends the next hop what is left minus
  :func:`margin` (0.3 s), so the hop that ran out answers (and names what it
  waited for) before its caller gives up on it;
- ``otel_lab.db`` caps every PostgreSQL wait (connect, statements, the pool) by it, and
  the api's cache calls their 0.5 s timeout (:func:`capped`).

The server span carries ``deadline.budget_ms`` (what this hop got), each downstream call's
span ``deadline.remaining_ms``, and the span of whatever ran out a ``deadline.exceeded``
event naming the dependency: a trace shows who ran out of budget. Out of budget, a hop
answers 504 with the JSON error model (:class:`DeadlineExceededError`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_lab.services.errors import ServiceError, error_json

HEADER = "x-request-timeout-ms"
_HEADER_BYTES = HEADER.encode()
# gRPC allows 8 digits for its timeout value: 27 hours in milliseconds is plenty.
_TIMEOUT_MS = re.compile(rb"[ \t]*([0-9]{1,8})[ \t]*")
# What a hop keeps for itself when it sends the budget on: the time for the next hop's
# answer (a 504 naming what it waited for) to come back and be passed on. Half of what is
# left when that is less, so a client's short budget still reaches the next hop.
PROPAGATION_MARGIN_SECONDS = 0.3

# The monotonic time by which the current request must be answered; None outside one.
_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


class DeadlineExceededError(ServiceError):
    """The request's budget ran out while it waited for ``dependency`` (504)."""

    status_code = 504
    error_type = "deadline_exceeded"

    def __init__(self, dependency: str, detail: str | None = None) -> None:
        super().__init__(
            detail or f"{dependency} did not answer within the request's deadline",
            dependency=dependency,
        )
        self.dependency = dependency


def parse_timeout_ms(value: bytes | str | None) -> float | None:
    """Seconds from a header value of whole milliseconds (1 to 8 ASCII digits); None for
    anything else, which the caller ignores."""
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if value is None or not (match := _TIMEOUT_MS.fullmatch(value)):
        return None
    return int(match.group(1)) / 1000


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Inside the block, the current request has ``seconds`` left (nested: the sooner wins)."""
    token = _deadline.set(min(time.monotonic() + seconds, _deadline.get() or math.inf))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float:
    """Seconds left of the current request's budget (infinite outside a request)."""
    deadline = _deadline.get()
    return math.inf if deadline is None else deadline - time.monotonic()


def capped(seconds: float) -> float:
    """A dependency's own timeout, or what is left of the request's budget when that is
    sooner (never below 0): no wait outlasts the request it serves."""
    return max(0.0, min(seconds, remaining()))


def active() -> bool:
    return _deadline.get() is not None


def expired() -> bool:
    return remaining() <= 0


def margin(left: float) -> float:
    """What a hop keeps of ``left`` seconds when it sends the rest on."""
    return min(PROPAGATION_MARGIN_SECONDS, max(0.0, left) / 2)


def header_value() -> str | None:
    """The header value for the next hop: what is left minus the margin (None: none set)."""
    left = remaining()
    if math.isinf(left):
        return None
    return str(max(0, int((left - margin(left)) * 1000)))


def exceeded(dependency: str, span: trace.Span | None = None) -> None:
    """Mark on ``span`` (default: the current one) that the budget ran out waiting for
    ``dependency``."""
    (span or trace.get_current_span()).add_event(
        "deadline.exceeded", {"deadline.dependency": dependency}
    )


class DeadlineMiddleware:
    """Starts the request's deadline (see the module's docstring); inside the telemetry
    middleware, so the server span is current."""

    def __init__(self, app: ASGIApp, budget_seconds: float) -> None:
        self.app = app
        self.budget = budget_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = self.budget
        span = trace.get_current_span()
        for name, value in scope["headers"]:
            if name == _HEADER_BYTES:
                asked = parse_timeout_ms(value)
                if asked is None:
                    span.set_attribute("deadline.header_ignored", True)
                else:
                    budget = min(budget, asked)
                break
        span.set_attribute("deadline.budget_ms", round(budget * 1000))
        with within(budget):
            if budget <= 0:  # nothing left to serve it with
                exceeded("request")
                error = DeadlineExceededError(
                    "request", "the request's deadline had passed when it arrived"
                )
                await error_json(error)(scope, receive, send)
                return
            await self.app(scope, receive, send)
