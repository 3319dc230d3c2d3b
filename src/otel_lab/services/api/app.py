"""The api service: ``uvicorn --factory otel_lab.services.api.app:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import State

from otel_lab.cache import create_async_redis, create_redis
from otel_lab.queue import create_task_publisher
from otel_lab.registry import API
from otel_lab.services.api import analyze, items, showcase, weather
from otel_lab.services.api.analyze_service import WorkerService
from otel_lab.services.api.queue_metrics import register_queue_depth
from otel_lab.services.api.showcase_service import Showcase
from otel_lab.services.base import create_service, database, database_ready, include_routes
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import Telemetry
from otel_lab.telemetry.celery import instrument_celery

SERVICE_NAME = API.name


@asynccontextmanager
async def lifespan(settings: Settings, telemetry: Telemetry) -> AsyncIterator[dict[str, object]]:
    redis = create_async_redis(settings, telemetry)
    # Untraced: a span per scrape-time LLEN would be noise in every trace view.
    register_queue_depth(create_redis(settings, Telemetry(enabled=False)))
    weather_client = weather.WeatherClient.from_settings(settings, telemetry)
    instrument_celery(telemetry)  # the publish spans (apply_async/...) go where the app's go
    tasks = create_task_publisher(settings)
    try:
        async with database(settings, telemetry) as db:
            yield {
                **db,
                "redis": redis,
                "tasks": tasks,
                "weather": weather_client,
                "showcase": Showcase(telemetry, SERVICE_NAME),
                "analysis": WorkerService(telemetry),
            }
    finally:
        await weather_client.aclose()
        await tasks.aclose()
        await redis.aclose()


async def _cache_ready(state: State) -> None:
    await state.redis.ping()


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    settings = settings or get_settings()
    app = create_service(
        SERVICE_NAME,
        settings,
        title="Otel Lab api",
        description="Items with cache-aside reads and worker enrichment, analyze, weather, "
        "showcase.",
        lifespan=lifespan,
        readiness_checks={"database": database_ready, "cache": _cache_ready},
        telemetry=telemetry,
    )
    include_routes(app, items.router, analyze.router, weather.router, showcase.router)
    return app
