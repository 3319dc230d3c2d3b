"""The api service: ``uvicorn otel_lab.services.api.app:app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from otel_lab.cache import create_async_redis, create_redis
from otel_lab.queue import create_celery_app
from otel_lab.registry import API
from otel_lab.services.api import analyze, items, showcase, weather
from otel_lab.services.api.queue_metrics import register_queue_depth
from otel_lab.services.base import create_service, database, database_ready

SERVICE_NAME = API.name


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = create_async_redis()
    app.state.celery = create_celery_app()
    register_queue_depth(create_redis(traced=False))
    app.state.weather = weather.WeatherClient.from_settings()
    try:
        async with database(app):
            yield
    finally:
        await app.state.weather.aclose()
        await app.state.redis.aclose()


async def _cache_ready(app: FastAPI) -> None:
    await app.state.redis.ping()


app = create_service(
    SERVICE_NAME,
    title="Otel Lab api",
    description="Items with cache-aside reads and worker enrichment, analyze, weather, showcase.",
    lifespan=lifespan,
    readiness_checks={"database": database_ready, "cache": _cache_ready},
)
for router in (items.router, analyze.router, weather.router, showcase.router):
    app.include_router(router)
