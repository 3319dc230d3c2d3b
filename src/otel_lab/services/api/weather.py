"""``GET /weather/{city}``: a real outbound HTTP call that fails well.

The upstream (``WEATHER_API_URL``; by default the offline ``weather_upstream`` service) is
called through one shared ``httpx.AsyncClient`` whose object is instrumented, so every
attempt is a CLIENT span whose context travels in ``traceparent`` and the upstream's
server span joins the same trace. Around the attempts, a ``weather.fetch`` span carries
the retries as events and the outcome; ``api_operation_seconds{operation="weather.current"}``
times the whole call.

Failure policy: each attempt has its own timeout; timeouts, connection errors and
502/503/504/429 are retried with exponential backoff and jitter; nothing outlives the
deadline. A timeout is answered 504, any other upstream failure 502, an unknown city 404,
each as JSON naming what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from pydantic import BaseModel, ValidationError

from otel_lab import __version__
from otel_lab.registry import WEATHER_UPSTREAM
from otel_lab.services.base import error_response, record_error
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.setup import telemetry_enabled

logger = logging.getLogger("otel_lab.api.weather")
tracer = trace.get_tracer("otel_lab.api.weather")
router = APIRouter(tags=["weather"])

OPERATION = "weather.current"
UPSTREAM_PATH = "/v1/current"
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})

# Letters (any script) and digits, words joined by at most two of space . ' - ; it starts
# with a letter. Keeps path tricks, control characters and markup out of logs and spans.
CITY_PATTERN = r"^[^\W\d_](?:[ .'\-]{0,2}[^\W_])*\.?$"
City = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=CITY_PATTERN,
        description="City name: letters, digits, spaces, . ' - (at most 64 characters)",
        examples=["London"],
    ),
]


class Observation(BaseModel):
    """What the upstream answers; anything else is an invalid upstream response."""

    city: str
    temperature_c: float
    feels_like_c: float
    humidity_pct: int
    wind_kph: float
    conditions: str


class WeatherOut(Observation):
    attempts: int  # upstream calls it took, retries included


class UpstreamFailure(Exception):
    """The upstream call failed; carries the status and message the client gets."""

    def __init__(self, status_code: int, detail: str, error_type: str, attempts: int) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error_type = error_type
        self.attempts = attempts


class WeatherClient:
    """The upstream weather API behind timeouts, bounded retries and a deadline."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        deadline_seconds: float,
    ) -> None:
        self.base_url = base_url
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.deadline_seconds = deadline_seconds
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_seconds,
            headers={"accept": "application/json", "user-agent": f"otel-lab-api/{__version__}"},
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        )
        if telemetry_enabled():
            # The client object, not the module: only calls through it are traced.
            HTTPXClientInstrumentor.instrument_client(self._client)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> WeatherClient:
        settings = settings or get_settings()
        return cls(
            settings.base_url(WEATHER_UPSTREAM),
            timeout_seconds=settings.weather_timeout_seconds,
            max_retries=settings.weather_max_retries,
            backoff_seconds=settings.weather_backoff_seconds,
            deadline_seconds=settings.weather_deadline_seconds,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def current(self, city: str) -> tuple[Observation, int]:
        """The city's current weather and how many attempts it took."""
        start = time.perf_counter()
        deadline = time.monotonic() + self.deadline_seconds
        with tracer.start_as_current_span(
            "weather.fetch",
            attributes={
                "api.operation": OPERATION,
                "operation.type": "external_api",
                "weather.city": city,
                "server.address": self._client.base_url.host,
            },
            record_exception=False,  # recorded below, only for real failures (not a 404)
            set_status_on_exception=False,
        ) as span:
            try:
                observation, attempts = await self._attempts(city, span, deadline)
                span.set_attribute("weather.attempts", attempts)
                return observation, attempts
            except UpstreamFailure as exc:
                span.set_attribute("weather.attempts", exc.attempts)
                if exc.status_code >= 500:
                    record_error(exc, exc.error_type)
                raise
            finally:
                prom.API_OPERATION.labels(OPERATION).observe(
                    time.perf_counter() - start, exemplar=prom.exemplar_for(span.get_span_context())
                )

    async def _attempts(
        self, city: str, span: trace.Span, deadline: float
    ) -> tuple[Observation, int]:
        attempt = 0
        reason = "deadline"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt += 1
            try:
                response = await self._client.get(
                    UPSTREAM_PATH,
                    params={"city": city},
                    timeout=min(self.timeout_seconds, remaining),
                )
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError as exc:
                reason = "connection"
                span.add_event("upstream.connection_error", {"error.type": type(exc).__name__})
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return _parse(response, city, attempt), attempt
                reason = f"status_{response.status_code}"
            if attempt > self.max_retries:
                break
            # Exponential backoff with jitter, so callers retrying together spread out.
            delay = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay >= deadline:
                break
            span.add_event(
                "retry",
                {"retry.attempt": attempt, "retry.reason": reason, "retry.backoff_s": delay},
            )
            prom.API_OPERATION_RETRIES.labels(OPERATION, reason).inc()
            await asyncio.sleep(delay)
        raise _give_up(reason, attempt)


def _give_up(reason: str, attempts: int) -> UpstreamFailure:
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if reason in ("timeout", "deadline"):
        return UpstreamFailure(
            504, f"weather upstream timed out {tries}", "upstream_timeout", attempts
        )
    if reason == "connection":
        return UpstreamFailure(
            502, f"weather upstream unreachable {tries}", "upstream_unreachable", attempts
        )
    status = reason.removeprefix("status_")
    return UpstreamFailure(
        502, f"weather upstream failed with status {status} {tries}", "upstream_error", attempts
    )


def _parse(response: httpx.Response, city: str, attempts: int) -> Observation:
    """A final (non-retryable) answer: the observation, or the failure it stands for."""
    if response.status_code == 404:
        raise UpstreamFailure(404, f"unknown city: {city}", "city_not_found", attempts)
    if response.status_code != 200:
        raise UpstreamFailure(
            502,
            f"weather upstream failed with status {response.status_code}",
            "upstream_error",
            attempts,
        )
    try:
        return Observation.model_validate_json(response.content)
    except ValidationError as exc:
        raise UpstreamFailure(
            502, "weather upstream sent an invalid response", "upstream_invalid_response", attempts
        ) from exc


@router.get(
    "/weather/{city}",
    response_model=WeatherOut,
    responses={
        404: {"description": "The upstream does not know the city"},
        422: {"description": "Invalid city name"},
        502: {"description": "The upstream failed, is unreachable or answered nonsense"},
        504: {"description": "The upstream did not answer in time"},
    },
)
async def weather(city: City, request: Request) -> WeatherOut | JSONResponse:
    """Current weather for a city, from the upstream weather API."""
    client: WeatherClient = request.app.state.weather
    try:
        observation, attempts = await client.current(city)
    except UpstreamFailure as exc:
        logger.warning(
            "weather_failed",
            extra={"city": city, "error_type": exc.error_type, "attempts": exc.attempts},
        )
        return error_response(
            exc.status_code, exc.detail, error_type=exc.error_type, attempts=exc.attempts
        )
    logger.info("weather_fetched", extra={"city": city, "attempts": attempts})
    return WeatherOut(**observation.model_dump(), attempts=attempts)


@router.get("/weather", include_in_schema=False)
@router.get("/weather/", include_in_schema=False)
async def weather_without_city() -> JSONResponse:
    """An empty city is bad input (422), not a missing page."""
    return error_response(422, "a city is required: GET /weather/{city}")
