"""The collaborators a route may ask for, as typed dependencies.

A service's lifespan opens its collaborators (engine, cache, clients) and yields them as
lifespan state; these aliases hand them to routes, typed, in the style of the FastAPI
full-stack template's ``api/deps.py``. A test swaps one with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import redis.asyncio
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from otel_lab.queue import TaskPublisher
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry


def lifespan_state(name: str) -> Callable[[Request], Awaitable[object]]:
    """A dependency that hands a route ``name`` from the lifespan state; the ``Annotated``
    alias that uses it says its type.

    ``async``, as every dependency here: FastAPI runs a plain ``def`` dependency on a worker
    thread, 60-140 us of CPU per dependency per request (scripts/bench_deps.py).
    """

    async def dependency(request: Request) -> object:
        return getattr(request.state, name)

    dependency.__name__ = dependency.__qualname__ = f"get_{name}"
    return dependency


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(lifespan_state("settings"))]
ServiceNameDep = Annotated[str, Depends(lifespan_state("service_name"))]
# Where the app's telemetry goes: services take their tracers from it (``.tracer(scope)``).
TelemetryDep = Annotated[Telemetry, Depends(lifespan_state("telemetry"))]
EngineDep = Annotated[AsyncEngine, Depends(lifespan_state("engine"))]
# The engine without BEGIN/COMMIT: each statement is its own transaction.
AutocommitDep = Annotated[AsyncEngine, Depends(lifespan_state("autocommit"))]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
# For a route that opens a session only on some paths (a cache miss).
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(lifespan_state("sessions"))]
RedisDep = Annotated[redis.asyncio.Redis, Depends(lifespan_state("redis"))]
# Queues Celery tasks by name (the api's enrichment), from the event loop.
TaskPublisherDep = Annotated[TaskPublisher, Depends(lifespan_state("tasks"))]
