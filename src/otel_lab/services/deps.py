"""The collaborators a route may ask for, as typed dependencies.

A service's lifespan opens its collaborators (engine, cache, clients) and yields them as
lifespan state; these aliases hand them to routes, typed, in the style of the FastAPI
full-stack template's ``api/deps.py``. A test swaps one with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import redis.asyncio
from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from otel_lab.settings import Settings


def current_settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def get_service_name(request: Request) -> str:
    name: str = request.state.service_name
    return name


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.state.engine
    return engine


def get_autocommit(request: Request) -> AsyncEngine:
    """The engine without BEGIN/COMMIT: each statement is its own transaction."""
    engine: AsyncEngine = request.state.autocommit
    return engine


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    """For a route that opens a session only on some paths (a cache miss)."""
    sessions: async_sessionmaker[AsyncSession] = request.state.sessions
    return sessions


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.state.sessions() as session:
        yield session


def get_redis(request: Request) -> redis.asyncio.Redis:
    client: redis.asyncio.Redis = request.state.redis
    return client


def get_celery(request: Request) -> Celery:
    celery: Celery = request.state.celery
    return celery


SettingsDep = Annotated[Settings, Depends(current_settings)]
ServiceNameDep = Annotated[str, Depends(get_service_name)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
AutocommitDep = Annotated[AsyncEngine, Depends(get_autocommit)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]
RedisDep = Annotated[redis.asyncio.Redis, Depends(get_redis)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
