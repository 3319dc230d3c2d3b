"""``GET /weather/{city}``: a real outbound HTTP call that fails well.

The upstream (``WEATHER_API_URL``; by default the offline ``weather_upstream`` service) is
called through one shared ``otel_lab.http_client`` client whose object is instrumented, so every
attempt is a CLIENT span whose context travels in ``traceparent`` and the upstream's
server span joins the same trace. Around the attempts, a ``weather.fetch`` span carries
the retries as events and the outcome; ``api_operation_seconds{operation="weather.current"}``
times the whole call.

Failure policy (the ``WEATHER_*`` settings, carried out by ``services/downstream.py``, the
one calling path every service uses): each attempt has its own timeout; timeouts, connection
errors and 502/503/504/429 are retried with exponential backoff and jitter; nothing outlives
the deadline; an upstream that keeps timing out or refusing opens a circuit breaker. A
timeout is answered 504, an open breaker 503, any other upstream failure 502, an unknown city
404, each as JSON naming what went wrong.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import ValidationError

from otel_lab import __version__
from otel_lab.http_client import Reply
from otel_lab.registry import WEATHER_UPSTREAM
from otel_lab.services.deps import lifespan_state
from otel_lab.services.downstream import (
    CircuitOpenError,
    Downstream,
    DownstreamError,
    DownstreamTimeoutError,
    RetryPolicy,
    create_client,
)
from otel_lab.services.errors import InvalidInputError, ServiceError, mark_failed
from otel_lab.services.weather_upstream.schemas import Observation
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry
from otel_lab.telemetry import metrics as prom

logger = logging.getLogger("otel_lab.api.weather")
SCOPE = "otel_lab.api.weather"
router = APIRouter(tags=["weather"])

OPERATION = "weather.current"
UPSTREAM_PATH = "/v1/current"
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
HEADERS = {"accept": "application/json", "user-agent": f"otel-lab-api/{__version__}"}

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


class WeatherOut(Observation):
    attempts: int  # upstream calls it took, retries included


class UpstreamFailure(ServiceError):
    """The upstream call failed: 404 (unknown city), 502, 503 or 504, with the attempts made."""

    def __init__(self, status_code: int, detail: str, error_type: str, attempts: int) -> None:
        super().__init__(detail, error_type=error_type, attempts=attempts)
        self.status_code = status_code
        self.attempts = attempts


class WeatherClient:
    """The upstream weather API behind timeouts, bounded retries, a deadline and a breaker:
    the services' one calling path (:class:`Downstream`) with the ``WEATHER_*`` policy."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        deadline_seconds: float,
        settings: Settings,
        telemetry: Telemetry,
    ) -> None:
        self._tracer = telemetry.tracer(SCOPE)
        self._client = create_client(settings, telemetry)
        # Only an upstream that cannot be reached or does not answer opens the breaker: a 5xx
        # answer is passed on as a 502 that names it (as the gateway counts its upstreams).
        self._upstream = Downstream(
            WEATHER_UPSTREAM.name,
            base_url,
            self._client,
            settings=settings,
            count_http_errors=False,
            timeout=timeout_seconds,
            retry=RetryPolicy(
                attempts=1 + max_retries,
                backoff_seconds=backoff_seconds,
                max_backoff_seconds=deadline_seconds,
                statuses=RETRYABLE_STATUS,
                retry_timeouts=True,
                deadline_seconds=deadline_seconds,
            ),
            telemetry=telemetry,
        )

    @classmethod
    def from_settings(cls, settings: Settings, telemetry: Telemetry) -> WeatherClient:
        return cls(
            settings.base_url(WEATHER_UPSTREAM),
            timeout_seconds=settings.weather_timeout_seconds,
            max_retries=settings.weather_max_retries,
            backoff_seconds=settings.weather_backoff_seconds,
            deadline_seconds=settings.weather_deadline_seconds,
            settings=settings,
            telemetry=telemetry,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def current(self, city: str) -> tuple[Observation, int]:
        """The city's current weather and how many attempts it took."""
        start = time.perf_counter()
        with self._tracer.start_as_current_span(
            "weather.fetch",
            attributes={
                "api.operation": OPERATION,
                "operation.type": "external_api",
                "weather.city": city,
                "server.address": self._upstream.origin.host,
            },
            record_exception=False,  # recorded below, only for real failures (not a 404)
            set_status_on_exception=False,
        ) as span:
            attempts = 0
            try:
                try:
                    reply, attempts = await self._upstream.send(
                        "GET", UPSTREAM_PATH, step="current", operation=OPERATION,
                        params={"city": city}, headers=HEADERS,
                    )  # fmt: skip
                except DownstreamError as exc:
                    attempts = exc.attempts
                    raise _failure(exc) from exc
                return _parse(reply, city, attempts), attempts
            except UpstreamFailure as exc:
                if exc.status_code >= 500:  # the request's span is marked by the handler
                    mark_failed(span, exc, exc.error_type)
                raise
            finally:
                span.set_attribute("weather.attempts", attempts)
                prom.API_OPERATION.labels(OPERATION).observe(
                    time.perf_counter() - start, exemplar=prom.exemplar_for(span.get_span_context())
                )


def _failure(exc: DownstreamError) -> UpstreamFailure:
    """What a failed call means for the client of ``/weather``."""
    attempts = exc.attempts
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, DownstreamTimeoutError):
        return UpstreamFailure(
            504, f"weather upstream timed out {tries}", "upstream_timeout", attempts
        )
    if isinstance(exc, CircuitOpenError):
        return UpstreamFailure(
            503, f"weather upstream circuit open, retry in {exc.retry_after:.0f}s",
            "circuit_open", attempts,
        )  # fmt: skip
    return UpstreamFailure(
        502, f"weather upstream unreachable {tries}", "upstream_unreachable", attempts
    )


def _parse(response: Reply, city: str, attempts: int) -> Observation:
    """A final answer: the observation, or the failure it stands for."""
    if response.status_code == 404:
        raise UpstreamFailure(404, f"unknown city: {city}", "city_not_found", attempts)
    if response.status_code != 200:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        raise UpstreamFailure(
            502,
            f"weather upstream failed with status {response.status_code}{tries}",
            "upstream_error",
            attempts,
        )
    try:
        return Observation.model_validate_json(response.content)
    except ValidationError as exc:
        raise UpstreamFailure(
            502, "weather upstream sent an invalid response", "upstream_invalid_response", attempts
        ) from exc


WeatherClientDep = Annotated[WeatherClient, Depends(lifespan_state("weather"))]


@router.get(
    "/weather/{city}",
    responses={
        404: {"description": "The upstream does not know the city"},
        422: {"description": "Invalid city name"},
        502: {"description": "The upstream failed, is unreachable or answered nonsense"},
        504: {"description": "The upstream did not answer in time"},
    },
)
async def weather(city: City, client: WeatherClientDep) -> WeatherOut:
    """Current weather for a city, from the upstream weather API."""
    try:
        observation, attempts = await client.current(city)
    except UpstreamFailure as exc:
        logger.warning(
            "weather_failed",
            extra={"city": city, "error_type": exc.error_type, "attempts": exc.attempts},
        )
        raise
    logger.info("weather_fetched", extra={"city": city, "attempts": attempts})
    return WeatherOut(**observation.model_dump(), attempts=attempts)


@router.get("/weather", include_in_schema=False)
@router.get("/weather/", include_in_schema=False)
async def weather_without_city() -> None:
    """An empty city is bad input (422), not a missing page."""
    raise InvalidInputError("a city is required: GET /weather/{city}")
