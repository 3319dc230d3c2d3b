"""The weather upstream: ``uvicorn --factory otel_lab.services.weather_upstream.app:create_app``.

A stand-in for a public weather API: ``GET /v1/current?city=London`` answers a
deterministic fake observation (the same city always gets the same weather), so tests and
demos need no internet. Some city names make it misbehave, so the api's timeouts, retries
and error mapping can be exercised and seen in traces:

- ``slow-<ms>[-...]`` waits that many milliseconds first (``slow-x``: 10 s; at most 30 s);
- ``error-<status>[-...]`` answers that HTTP status (``error-x``: 500);
- ``flaky-...`` fails with 503 on every other call for the same city, starting with the first;
- ``invalid-...`` answers 200 with a body that is not a weather observation.

With ``INSTRUMENTATION_MODE=zero-code`` the process is expected to run under
``opentelemetry-instrument`` (see :mod:`.launch`): the distro has installed the providers
and patched FastAPI, so the app skips our telemetry package and only sets up JSON logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import PlainTextResponse
from opentelemetry import trace

from otel_lab import __version__, faults
from otel_lab.registry import WEATHER_UPSTREAM
from otel_lab.services.base import create_service, include_routes
from otel_lab.services.deps import TelemetryDep
from otel_lab.services.errors import ServiceError, handle_service_error
from otel_lab.services.weather_upstream.schemas import Observation
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import Telemetry
from otel_lab.telemetry.logs import configure_logging

SERVICE_NAME = WEATHER_UPSTREAM.name
TITLE = "Otel Lab weather upstream"
DESCRIPTION = "Deterministic fake weather on loopback, with cities that simulate failures."

DEFAULT_SLOW_SECONDS = 10.0
MAX_SLOW_SECONDS = 30.0
_FLAKY_MEMORY = 1024  # cities whose call count is remembered (oldest forgotten first)

CONDITIONS = (
    "clear sky",
    "few clouds",
    "scattered clouds",
    "overcast",
    "light rain",
    "rain",
    "thunderstorm",
    "snow",
    "mist",
    "drizzle",
)

logger = logging.getLogger("otel_lab.weather_upstream")
SCOPE = "otel_lab.weather_upstream"
router = APIRouter(tags=["weather"])

Simulation = Literal["none", "slow", "error", "flaky", "invalid"]


@dataclass(frozen=True)
class Behaviour:
    """What a city name asks the upstream to do."""

    simulation: Simulation = "none"
    delay_seconds: float = 0.0
    status_code: int = 200


_NUMBER = re.compile(r"(\d{1,6})")


def behaviour_for(city: str) -> Behaviour:
    """Read the simulation a city name asks for (see the module docstring)."""
    name = city.casefold()
    if name.startswith("slow-"):
        match = _NUMBER.match(name, len("slow-"))
        delay = int(match.group(1)) / 1000 if match else DEFAULT_SLOW_SECONDS
        return Behaviour("slow", delay_seconds=min(delay, MAX_SLOW_SECONDS))
    if name.startswith("error-"):
        match = _NUMBER.match(name, len("error-"))
        status = int(match.group(1)) if match else 500
        return Behaviour("error", status_code=status if 400 <= status <= 599 else 500)
    if name.startswith("flaky-"):
        return Behaviour("flaky")
    if name.startswith("invalid-"):
        return Behaviour("invalid")
    return Behaviour()


def observe(city: str) -> Observation:
    """The same city always gets the same weather: a hash of its name picks the values."""
    digest = hashlib.sha256(city.casefold().encode()).digest()
    temperature = round(-15 + digest[0] / 255 * 50, 1)
    wind = round(digest[2] / 255 * 60, 1)
    return Observation(
        city=city,
        temperature_c=temperature,
        feels_like_c=round(temperature - wind / 10, 1),
        humidity_pct=20 + digest[1] * 80 // 255,
        wind_kph=wind,
        conditions=CONDITIONS[digest[3] % len(CONDITIONS)],
    )


_flaky_calls: OrderedDict[str, int] = OrderedDict()


def _flaky_call_number(city: str) -> int:
    key = city.casefold()
    count = _flaky_calls.pop(key, 0) + 1
    _flaky_calls[key] = count
    while len(_flaky_calls) > _FLAKY_MEMORY:
        _flaky_calls.popitem(last=False)
    return count


class SimulatedFailure(ServiceError):
    """The failure a city name asks for, answered with the services' JSON error body."""

    error_type = "simulated_failure"

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail, error_type="city_not_found" if status_code == 404 else None)
        self.status_code = status_code


@router.get("/v1/current", response_model=Observation)
async def current(
    city: Annotated[str, Query(min_length=1, max_length=100, description="City name")],
    telemetry: TelemetryDep,
) -> Observation | PlainTextResponse:
    """The current (fake) weather for a city, or the failure its name asks for (an
    ``invalid-`` city gets a 200 that is not an observation: the one non-model answer)."""
    behaviour = behaviour_for(city)
    with telemetry.tracer(SCOPE).start_as_current_span(
        "weather.lookup",
        attributes={"weather.city": city, "weather.simulation": behaviour.simulation},
    ) as span:
        if faults.active("weather-upstream"):  # slow, and failing half of the time
            faults.mark(span, "weather-upstream")
            await asyncio.sleep(random.uniform(0.4, 1.2))
            if random.random() < 0.5:
                raise SimulatedFailure(503, "fault weather-upstream: upstream overloaded")
        if behaviour.delay_seconds:
            span.add_event("simulated.delay", {"delay_seconds": behaviour.delay_seconds})
            await asyncio.sleep(behaviour.delay_seconds)
        if behaviour.simulation == "error":
            logger.warning(
                "simulated_error", extra={"city": city, "status_code": behaviour.status_code}
            )
            if behaviour.status_code == 404:
                raise SimulatedFailure(404, f"city not found: {city}")
            raise SimulatedFailure(behaviour.status_code, "simulated upstream failure")
        if behaviour.simulation == "flaky":
            call = _flaky_call_number(city)
            span.set_attribute("weather.flaky_call", call)
            if call % 2 == 1:
                logger.warning("simulated_flake", extra={"city": city, "call": call})
                raise SimulatedFailure(503, "temporarily unavailable, retry")
        if behaviour.simulation == "invalid":
            return PlainTextResponse("<html>upstream maintenance page</html>")
        observation = observe(city)
        span.set_attribute("weather.conditions", observation.conditions)
        logger.info("weather_served", extra={"city": city, "conditions": observation.conditions})
        return observation


def _zero_code_app(settings: Settings, telemetry: Telemetry) -> FastAPI:
    """The app as ``opentelemetry-instrument`` expects it: plain FastAPI, no SDK set-up here.

    The distro has installed the tracer, meter and logger providers and patched
    ``fastapi.FastAPI``, so calling our ``setup_telemetry`` or adding our middleware would
    install providers twice and create two server spans per request. Only the JSON log
    format is ours; the OTLP log handler the logging instrumentation put on the root logger
    is kept.
    """
    otlp_handler = next(
        (h for h in logging.getLogger().handlers if type(h).__module__.startswith("opentelemetry")),
        None,
    )
    service_name = os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)
    configure_logging(service_name, settings.log_level, otlp_handler=otlp_handler)
    if not _sdk_installed():
        logger.warning(
            "zero_code_mode_without_agent",
            extra={"hint": "start with opentelemetry-instrument; no telemetry is exported"},
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Telemetry]]:
        yield {"telemetry": telemetry}

    app = FastAPI(title=TITLE, description=DESCRIPTION, version=__version__, lifespan=lifespan)
    app.add_exception_handler(ServiceError, handle_service_error)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": SERVICE_NAME, "instrumentation": "zero-code"}

    return app


def _sdk_installed() -> bool:
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The upstream, instrumented the way ``INSTRUMENTATION_MODE`` says. ``telemetry`` None
    means the process's entry point: in manual mode it sets up the process's own (see
    ``create_service``); in zero-code mode the manual spans go to the global providers,
    which are the agent's."""
    settings = settings or get_settings()
    if settings.instrumentation_mode == "zero-code":
        app = _zero_code_app(settings, telemetry or Telemetry.from_environment())
    else:
        app = create_service(
            SERVICE_NAME, settings, title=TITLE, description=DESCRIPTION, telemetry=telemetry
        )
    include_routes(app, router)
    return app
