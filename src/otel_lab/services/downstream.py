"""Calling another service: one way, shared by the gateway and the user -> order -> audit chain.

What a call gets here, so no service hand-rolls its own:

- a shared :class:`otel_lab.http_client.HTTPClient` per process with a keep-alive pool,
  traced by the ``telemetry.http_client`` middleware (a CLIENT span per attempt with the
  stable HTTP attributes, and W3C ``traceparent``/``baggage`` injection). Our own small
  client rather than httpx or aiohttp: on this kind of machine an httpx call costs about
  0.5 ms of CPU, an aiohttp call 0.08-0.15 ms, this one 0.02-0.07 ms
  (``scripts/bench_clients.py``), and the gateway makes one per request;
- bounded retries with exponential backoff and jitter (``tenacity``) for transient failures:
  a connection that could not be made (the request never left, so any method is safe), and
  502/503/504 answers or broken connections when the call is idempotent (a safe method, or a
  call carrying an ``Idempotency-Key`` the downstream honours). Timeouts are not retried: a
  slow service asked again is a slower service. A :class:`RetryPolicy` changes that per
  downstream (the api's weather call retries timeouts and 429 within an overall deadline);
- a circuit breaker per downstream (closed -> open after N consecutive failures -> half-open
  after a cool-down, one trial call -> closed or open again), published as the
  ``circuit_breaker_state`` gauge and as the ``circuit_breaker.state`` span attribute;
- one INTERNAL span around the whole call (``<service> <step>``) holding the retry and
  breaker events, marked ERROR with the exception when the call fails;
- typed errors (:class:`DownstreamError` and its subclasses, each a ``ServiceError``) that
  carry the HTTP status the caller should answer and name the service and the step;
- the request's deadline (``services.deadline``): every attempt's timeout is capped by what
  is left of it, a retry is made only when the budget still fits one (the time the failed
  attempt took, at least), a call with nothing left is not made, and the next hop is sent
  what is left (``X-Request-Timeout-Ms``) minus a margin to answer in.

It also holds what travels with a chain call: the baggage keys (``user.id``, ``action``), the
span processor that copies them onto every span, and the PII switch.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlencode

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from otel_lab.http_client import (
    ConnectError,
    HTTPClient,
    Middleware,
    Origin,
    Reply,
    TransportError,
)
from otel_lab.jsontypes import JSONValue
from otel_lab.services import deadline
from otel_lab.services.errors import (
    IdempotencyKeyReusedError,
    InvalidInputError,
    ServiceError,
    mark_failed,
    with_retry_after,
)
from otel_lab.settings import Settings
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.context import request_id_var, sanitize_request_id
from otel_lab.telemetry.http_client import client_middleware
from otel_lab.telemetry.setup import Telemetry

logger = logging.getLogger(__name__)
SCOPE = "otel_lab.downstream"

RETRY_STATUSES = frozenset({502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Baggage the chain carries: set by user-service, copied onto spans by every chain service.
CHAIN_BAGGAGE_KEYS = ("user.id", "action")
# Personal data travels only when TELEMETRY_RECORD_PII=true.
PII_BAGGAGE_KEYS = ("user.name", "user.email")


# --------------------------------------------------------------------------- errors


class DownstreamError(ServiceError):
    """A call to another service failed; ``status_code`` is what the caller should answer.

    Counted where the call failed (:meth:`Downstream.request`), so the handler that answers
    it only marks the caller's request span. The body names the service and the step.
    """

    status_code = 502
    error_type = "downstream_failed"
    counted = True

    def __init__(
        self, service: str, step: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{service} {reason}", headers=headers, step=step, service=service)
        self.service = service
        self.step = step
        self.reason = reason
        self.attempts = 0  # calls made before giving up (set by Downstream.send)


class DownstreamUnavailableError(DownstreamError):
    """No connection could be made, or it broke before an answer came."""

    error_type = "downstream_unavailable"


class DownstreamTimeoutError(DownstreamError):
    status_code = 504
    error_type = "downstream_timeout"


class DownstreamHTTPError(DownstreamError):
    """The downstream answered, with an error status the caller does not accept: 502, or
    the downstream's own 503/504 (unavailable, out of time), which the caller passes on."""

    error_type = "downstream_error_response"

    def __init__(self, service: str, step: str, upstream_status: int, detail: str) -> None:
        super().__init__(service, step, f"failed: {detail} (HTTP {upstream_status})")
        self.upstream_status = upstream_status
        if upstream_status in (503, 504):
            self.status_code = upstream_status


class CircuitOpenError(DownstreamError):
    """The breaker refused the call without trying: the downstream failed repeatedly."""

    status_code = 503
    error_type = "circuit_open"

    def __init__(self, service: str, step: str, retry_after: float) -> None:
        super().__init__(
            service,
            step,
            f"circuit open, retry in {retry_after:.0f}s",
            headers=with_retry_after(retry_after),
        )
        self.retry_after = retry_after


class SimulationDisabledError(InvalidInputError):
    """A chain request asked for a simulated failure while ``CHAIN_SIMULATED_FAILURES`` is off."""

    def __init__(self) -> None:
        super().__init__(
            "simulate_failure is disabled (CHAIN_SIMULATED_FAILURES=false)", step="request"
        )


# --------------------------------------------------------------------------- breaker


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures; after ``reset_seconds``
    one trial call is let through (half-open): success closes, failure opens again.

    A small class rather than a library: the callers decide what a failure is (a refused
    connection always; a 5xx answer only where it means the service is unwell), and every
    transition must reach the gauge and the current span. Single event loop, no awaits
    inside: no lock needed.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        # Read at scrape time, so an open breaker whose cool-down has passed reads half-open.
        prom.CIRCUIT_BREAKER_STATE.labels(name).set_function(self._gauge_value)

    def _gauge_value(self) -> float:
        """The state as the gauge shows it; a pure read (scrapes run on another thread)."""
        state = self._state
        if state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            state = BreakerState.HALF_OPEN
        return _GAUGE_VALUE[state]

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_seconds
        ):
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def allow(self, step: str) -> BreakerState:
        """Ask to make a call: returns the state seen, or raises :class:`CircuitOpenError`."""
        state = self.state
        if state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._trial_in_flight
        ):
            trace.get_current_span().add_event(
                "circuit_breaker.rejected", {"circuit_breaker.state": state.value}
            )
            raise CircuitOpenError(self.name, step, self.retry_after() or self.reset_seconds)
        if state is BreakerState.HALF_OPEN:
            self._trial_in_flight = True
        return state

    def record_success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._trial_in_flight = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._transition(BreakerState.OPEN)
        elif self._state is BreakerState.OPEN:
            self._opened_at = self._clock()  # a late failure restarts the cool-down

    def release(self) -> None:
        """A call ended without an outcome (cancelled): free the half-open trial slot."""
        self._trial_in_flight = False

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        trace.get_current_span().add_event(
            "circuit_breaker.state_change",
            {"circuit_breaker.from": old.value, "circuit_breaker.to": new.value},
        )
        log = logger.warning if new is BreakerState.OPEN else logger.info
        log(
            "circuit_breaker_state_change",
            extra={"downstream": self.name, "from_state": old.value, "to_state": new.value},
        )


# --------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class RetryPolicy:
    """How often, how far apart and on what a call to one downstream is tried again."""

    attempts: int
    backoff_seconds: float  # the first wait; each next one doubles, plus jitter
    max_backoff_seconds: float
    statuses: frozenset[int] = field(default=RETRY_STATUSES)  # answers retried (idempotent)
    # Try a timed-out attempt again: off by default (a slow service asked again is slower).
    retry_timeouts: bool = False
    # Nothing outlives this, attempts and waits included; an attempt gets what is left.
    deadline_seconds: float | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, statuses: frozenset[int] = RETRY_STATUSES
    ) -> RetryPolicy:
        """The ``DOWNSTREAM_RETRY_*`` policy, retrying the answers in ``statuses``."""
        return cls(
            attempts=settings.downstream_retry_attempts,
            backoff_seconds=settings.downstream_retry_backoff_seconds,
            max_backoff_seconds=settings.downstream_retry_max_backoff_seconds,
            statuses=statuses,
        )


class _RetryableError(Exception):
    """Wraps a failure that another attempt may fix (only tenacity sees it)."""

    def __init__(self, error: DownstreamError | None = None, response: Reply | None = None):
        super().__init__(error or f"HTTP {response.status_code if response else '?'}")
        self.error = error
        self.response = response


class _RetryFits(stop_base):
    """Stop when the request's deadline (monotonic ``until``) leaves a retry, after its
    backoff, less time than the failed attempt took (it would not finish either) or too
    little to give the next hop anything. A refused connection, failed in milliseconds, is
    still retried; a 503 that came after the downstream's own 1.5 s deadline is not."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.started = time.monotonic()  # of the current attempt

    def __call__(self, retry_state: RetryCallState) -> bool:
        if math.isinf(self.until):
            return False
        took = time.monotonic() - self.started
        left = self.until - time.monotonic() - retry_state.upcoming_sleep
        return left < max(took, 2 * deadline.PROPAGATION_MARGIN_SECONDS)


def _middlewares(telemetry: Telemetry) -> tuple[Middleware, ...]:
    """Client spans, context propagation and the duration metric, when telemetry is on."""
    if not telemetry.enabled:
        return ()
    return (client_middleware(telemetry.tracer_provider, telemetry.meter_provider),)


def create_client(settings: Settings, telemetry: Telemetry) -> HTTPClient:
    """The process's shared client: a keep-alive pool, short connect timeout, traced to
    ``telemetry``'s providers. It keeps no cookies (it is shared by every request of the
    process, so one caller's cookie must not travel with another's request).

    Create it inside the running event loop (a lifespan) and close it there.
    """
    return HTTPClient(
        connect_timeout=settings.downstream_connect_timeout_seconds,
        middlewares=_middlewares(telemetry),
    )


async def probe(client: HTTPClient, url: str, *, timeout: float) -> Reply:
    """One plain GET with a deadline, no retries and no breaker (for ``/ready`` checks)."""
    return await client.request("GET", url, timeout=timeout)


def failure_name(exc: BaseException) -> str:
    """How errors, ``retry.reason`` and logs name a transport failure: the client's
    exception class (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
    ``RemoteProtocolError``, ``NetworkError``: httpx's names, which these fields have
    always used)."""
    return type(exc).__name__


def _detail_of(response: Reply) -> str:
    """The downstream's own ``detail`` when it answered our JSON error shape."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(detail := body.get("detail"), str):
        return detail[:300]
    return response.reason_phrase or f"HTTP {response.status_code}"


def _error_of(service: str, step: str, response: Reply) -> ServiceError:
    """The error a caller answers for a downstream's error answer: a
    :class:`DownstreamHTTPError`, except the client's own mistake that the downstream
    found, an ``Idempotency-Key`` reused for another request, passed on as the 422 it is
    (naming where it was found), not as a failure of the downstream."""
    reused = IdempotencyKeyReusedError
    if response.status_code == reused.status_code:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("error_type") == reused.error_type:
            return reused(
                _detail_of(response),
                service=str(body.get("service") or service),
                step=str(body.get("step") or step),
            )
    return DownstreamHTTPError(service, step, response.status_code, _detail_of(response))


@dataclass(frozen=True, slots=True)
class _Call:
    """What every attempt of one call sends."""

    method: str
    target: str  # the path and query on the downstream, encoded
    headers: Mapping[str, str]
    body: bytes


class Downstream:
    """One downstream service as seen by one caller: base URL, breaker, retry policy.

    ``count_http_errors``: whether a 5xx answer counts against the breaker. The chain says
    yes (order-service answering 500 is order-service failing); the gateway says no (a 5xx
    from user-service may be about order-service, and cascading breakers would turn one
    fault into an outage of the front door), so only unreachable upstreams open its breakers.

    ``retry``: the :class:`RetryPolicy` (default: the ``DOWNSTREAM_RETRY_*`` settings). The
    gateway retries no answers: an upstream's 502/503/504 already comes after that upstream's
    own deadline and retries (a hung database is a 503 after its 1.5 s deadline), and asking
    again from the front door would multiply the wait; it still retries connections that
    could not be made.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        client: HTTPClient,
        *,
        settings: Settings,
        count_http_errors: bool = True,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        telemetry: Telemetry,
    ) -> None:
        self.settings = settings
        self.tracer = telemetry.tracer(SCOPE)
        self.traced = telemetry.enabled
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.origin, self.base_path = Origin.of(self.base_url)
        self.client = client
        self.count_http_errors = count_http_errors
        self.retry = retry or RetryPolicy.from_settings(self.settings)
        self.timeout = timeout or self.settings.downstream_timeout_seconds  # per attempt
        self.breaker = CircuitBreaker(
            name,
            failure_threshold=self.settings.breaker_failure_threshold,
            reset_seconds=self.settings.breaker_reset_seconds,
        )
        self._timers: dict[str, Histogram] = {}  # step -> its api_operation_seconds series

    def _span(self, step: str, idempotent: bool, method: str) -> AbstractContextManager[Span]:
        """The call's INTERNAL span, current while it runs; with telemetry off none at all
        (the no-op tracer's span and context switch cost about 10 us a call, for nothing)."""
        if not self.traced:
            return nullcontext(trace.INVALID_SPAN)
        return self.tracer.start_as_current_span(
            f"{self.name} {step}",
            kind=SpanKind.INTERNAL,
            attributes={
                "peer.service": self.name,
                "downstream.step": step,
                "downstream.idempotent": idempotent,
                "http.request.method": method,
            },
            record_exception=False,
            set_status_on_exception=False,
        )

    def _timer(self, step: str) -> Histogram:
        """``api_operation_seconds{operation="<service>:<step>"}``, looked up once per step
        (prometheus_client's ``labels()`` takes a lock and checks the values every call)."""
        timer = self._timers.get(step)
        if timer is None:
            timer = self._timers[step] = prom.API_OPERATION.labels(f"{self.name}:{step}")
        return timer

    async def request(
        self,
        method: str,
        path: str,
        *,
        step: str,
        idempotent: bool | None = None,
        raise_for_status: bool = False,
        json: JSONValue = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Call ``path`` on the downstream with retries and the breaker.

        Returns the response (any status unless ``raise_for_status``, then only < 400);
        raises a :class:`DownstreamError` when no usable answer came.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        started = time.perf_counter()
        with self._span(step, idempotent, method) as span:
            if deadline.active():
                span.set_attribute("deadline.remaining_ms", round(deadline.remaining() * 1000))
            try:
                response, _ = await self.send(
                    method, path, step=step, idempotent=idempotent, json=json,
                    content=content, params=params, headers=headers,
                )  # fmt: skip
                span.set_attribute("http.response.status_code", response.status_code)
                if raise_for_status and response.status_code >= 400:
                    raise _error_of(self.name, step, response)
                return response
            except DownstreamError as exc:
                mark_failed(span, exc, exc.error_type)
                prom.ERRORS.labels(exc.error_type).inc()
                raise
            finally:
                span.set_attribute("circuit_breaker.state", self.breaker.state.value)
                self._timer(step).observe(time.perf_counter() - started)

    async def send(
        self,
        method: str,
        path: str,
        *,
        step: str,
        operation: str | None = None,
        idempotent: bool | None = None,
        json: JSONValue = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Reply, int]:
        """The attempts of one call under the retry policy and the breaker, without a span of
        their own: retry and breaker events go on the current span. Returns the answer and
        how many attempts it took (a :class:`DownstreamError` carries ``attempts`` too).
        ``operation`` labels the retry counter (default ``"<service>:<step>"``).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        # Sent as given: the path and query were already encoded by whoever made them.
        target = self.base_path + path
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        body, sent_headers = content or b"", headers or {}  # the client copies them
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent_headers = {**sent_headers, "Content-Type": "application/json"}
        return await self._with_retries(
            trace.get_current_span(), _Call(method, target, sent_headers, body), step,
            operation or f"{self.name}:{step}", idempotent,
        )  # fmt: skip

    async def _with_retries(
        self,
        span: trace.Span,
        call: _Call,
        step: str,
        operation: str,
        idempotent: bool,
    ) -> tuple[Reply, int]:
        policy = self.retry
        began = time.monotonic()
        fits = _RetryFits(began + deadline.remaining())
        until = fits.until
        if policy.deadline_seconds is not None:
            until = min(until, began + policy.deadline_seconds)
        attempts = 1
        try:
            # The first attempt without tenacity: most calls succeed at once, and building
            # the retry machinery (stop, wait, the retrying object) cost about a sixth of the
            # gateway's CPU per proxied request (docs/performance.md). A first failure worth
            # retrying is replayed as tenacity's first attempt, so what follows (waits, stops,
            # the "retry" events) is what tenacity does.
            try:
                reply = await self._attempt(call, step, idempotent, until)
                return reply, attempts
            except _RetryableError as failed:
                replay: _RetryableError | None = failed
            stop: stop_base = stop_after_attempt(policy.attempts) | fits
            if policy.deadline_seconds is not None:
                # tenacity counts from its own start, after the first attempt
                spent = time.monotonic() - began
                stop = stop | stop_before_delay(policy.deadline_seconds - spent)
            retrying = AsyncRetrying(
                stop=stop,
                wait=wait_exponential_jitter(
                    multiplier=policy.backoff_seconds,
                    max=policy.max_backoff_seconds,
                    jitter=policy.backoff_seconds / 2,
                ),
                retry=retry_if_exception_type(_RetryableError),
                before_sleep=lambda state: self._on_retry(span, step, operation, state),
                reraise=True,
            )
            previous = replay
            async for attempt in retrying:
                with attempt:
                    if replay is not None:
                        first: _RetryableError = replay
                        replay = None
                        raise first
                    attempts += 1
                    fits.started = time.monotonic()
                    try:
                        reply = await self._attempt(call, step, idempotent, until)
                        return reply, attempts
                    except CircuitOpenError:
                        # Opened by our own earlier attempts: the real cause says more.
                        if previous is not None and previous.error is not None:
                            raise previous.error from None
                        if previous is not None and previous.response is not None:
                            return previous.response, attempts - 1
                        raise
                    except _RetryableError as retryable:
                        previous = retryable
                        raise
        except _RetryableError as exhausted:
            if exhausted.error is not None:
                exhausted.error.attempts = attempts
                raise exhausted.error from None
            assert exhausted.response is not None
            return exhausted.response, attempts  # the last answer, e.g. 503: the caller decides
        except DownstreamError as error:
            error.attempts = attempts
            raise
        finally:
            span.set_attribute("retry.attempts", attempts)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(
        self, call: _Call, step: str, idempotent: bool, until: float = math.inf
    ) -> Reply:
        if deadline.expired():
            # Nothing left to give the next hop: not called, and not its failure.
            deadline.exceeded(self.name)
            raise DownstreamTimeoutError(
                self.name, step, "not called: the request's deadline has run out"
            )
        breaker = self.breaker
        breaker.allow(step)  # raises CircuitOpenError: never retried
        # The deadline may be nearer than a full try.
        timeout = max(min(self.timeout, until - time.monotonic()), 0.001)
        headers = call.headers
        if (budget := deadline.header_value()) is not None:
            headers = {**headers, deadline.HEADER: budget}
        try:
            response = await self.client.request(
                call.method, (self.origin, call.target), headers=headers, body=call.body,
                timeout=timeout,
            )  # fmt: skip
        except ConnectError as exc:
            breaker.record_failure()
            # The request never left: safe to try again whatever the method.
            reason = f"unavailable: connection failed ({failure_name(exc)})"
            raise _RetryableError(DownstreamUnavailableError(self.name, step, reason)) from exc
        except TimeoutError as exc:  # the answer did not come in time
            breaker.record_failure()
            reason = f"timed out after {timeout:.3g}s ({failure_name(exc)})"
            if deadline.expired():
                deadline.exceeded(self.name)
                reason += ": the request's deadline ran out"
            timed_out = DownstreamTimeoutError(self.name, step, reason)
            if self.retry.retry_timeouts:
                raise _RetryableError(timed_out) from exc
            raise timed_out from exc
        except TransportError as exc:
            breaker.record_failure()
            error = DownstreamUnavailableError(
                self.name, step, f"unavailable: connection broken ({failure_name(exc)})"
            )
            if idempotent:
                raise _RetryableError(error) from exc
            raise error from exc
        except BaseException:
            breaker.release()
            raise
        if self.count_http_errors and response.status_code >= 500:
            breaker.record_failure()
        else:
            breaker.record_success()
        if idempotent and response.status_code in self.retry.statuses:
            raise _RetryableError(response=response)
        return response

    def _on_retry(self, span: trace.Span, step: str, operation: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableError) and exc.response is not None:
            reason = f"status_{exc.response.status_code}"
        elif isinstance(exc, _RetryableError) and exc.error is not None:
            reason = failure_name(exc.__cause__ or exc.error)
        else:
            reason = type(exc).__name__ if exc else "unknown"
        delay = state.next_action.sleep if state.next_action else 0.0
        span.add_event(
            "retry",
            {
                "retry.attempt": state.attempt_number,
                "retry.reason": reason,
                "retry.delay_s": round(delay, 3),
            },
        )
        prom.API_OPERATION_RETRIES.labels(operation, reason).inc()
        logger.info(
            "downstream_retry",
            extra={"downstream": self.name, "step": step, "attempt": state.attempt_number,
                   "reason": reason, "delay_s": round(delay, 3)},
        )  # fmt: skip


# --------------------------------------------------------------------------- context


def baggage_keys(settings: Settings) -> tuple[str, ...]:
    return CHAIN_BAGGAGE_KEYS + (PII_BAGGAGE_KEYS if settings.record_pii else ())


_baggage_processor_installed: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def install_baggage_span_attributes(settings: Settings, telemetry: Telemetry) -> None:
    """Copy the chain's baggage entries onto every span ``telemetry``'s provider (None:
    the global one) starts, once per provider.

    An allow-list, not every entry: baggage is caller-controlled data, and only the keys
    the chain itself sets are worth (and safe) recording.
    """
    if not telemetry.enabled:
        return
    provider = telemetry.tracer_provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider) or provider in _baggage_processor_installed:
        return
    allowed = frozenset(baggage_keys(settings))
    provider.add_span_processor(BaggageSpanProcessor(lambda key: key in allowed))
    _baggage_processor_installed.add(provider)


def chain_baggage(
    user_id: int,
    action: str,
    *,
    name: str | None = None,
    email: str | None = None,
    settings: Settings,
) -> Context:
    """A context whose baggage carries the user context (PII only when allowed)."""
    ctx = baggage.set_baggage("user.id", str(user_id))
    ctx = baggage.set_baggage("action", action, context=ctx)
    if settings.record_pii:
        if name:
            ctx = baggage.set_baggage("user.name", name, context=ctx)
        if email:
            ctx = baggage.set_baggage("user.email", email, context=ctx)
    return ctx


def idempotency_key(value: str | None) -> str:
    """The caller's ``Idempotency-Key`` when it is a sane token, else a fresh one.

    The chain sends one key down every hop, so a retried call finds the order and the
    audit row the first attempt wrote instead of writing them twice.
    """
    return sanitize_request_id(value)


def outbound_headers(key: str | None = None) -> dict[str, str]:
    """Headers every chain call carries besides trace context: request ID, idempotency key."""
    headers: dict[str, str] = {}
    if request_id := request_id_var.get():
        headers["X-Request-ID"] = request_id
    if key:
        headers["Idempotency-Key"] = key
    return headers


async def call_next_hop(
    downstream: Downstream, step: str, payload: Mapping[str, JSONValue], key: str
) -> Reply:
    """``POST /process`` on the chain's next service: retried safely (it honours the
    Idempotency-Key ``key``); an answer >= 400 is raised as a :class:`DownstreamError`, or
    as the 422 of a key reused for another request (the client's, passed on)."""
    return await downstream.request(
        "POST", "/process", step=step, idempotent=True, raise_for_status=True, json=payload,
        headers=outbound_headers(key),
    )  # fmt: skip
