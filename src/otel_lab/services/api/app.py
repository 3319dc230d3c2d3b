"""The api service: ``uvicorn otel_lab.services.api.app:app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from otel_lab.cache import create_async_redis, create_redis
from otel_lab.db import create_engine, session_factory
from otel_lab.services.api import analyze, items, showcase, weather
from otel_lab.services.api.queue_metrics import register_queue_depth
from otel_lab.services.base import create_service
from otel_lab.worker.queue import create_celery_app

SERVICE_NAME = "api"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine()
    app.state.sessions = session_factory(engine)
    app.state.engine = engine
    app.state.redis = create_async_redis()
    app.state.celery = create_celery_app()
    register_queue_depth(create_redis(traced=False))
    app.state.weather = weather.WeatherClient.from_settings()
    try:
        yield
    finally:
        await app.state.weather.aclose()
        await app.state.redis.aclose()
        await engine.dispose()


async def _database_ready(app: FastAPI) -> None:
    async with app.state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _cache_ready(app: FastAPI) -> None:
    await app.state.redis.ping()


app = create_service(
    SERVICE_NAME,
    title="Otel Lab api",
    description="Items with cache-aside reads and worker enrichment, analyze, weather, showcase.",
    lifespan=lifespan,
    readiness_checks={"database": _database_ready, "cache": _cache_ready},
)
app.include_router(items.router)
for router in (analyze.router, weather.router, showcase.router):
    app.include_router(router)
