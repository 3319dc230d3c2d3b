"""PostgreSQL access shared by the services and the worker.

Engines are instrumented once here: one span per statement (on ``sync_engine``, so async
drivers are not traced twice), and ``db_operation_seconds`` by statement verb.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy import Engine, MetaData, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.setup import telemetry_enabled

# Constraint names that Alembic can rely on across PostgreSQL versions.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DatabaseNotConfiguredError(RuntimeError):
    pass


def database_url(settings: Settings | None = None) -> str:
    url = (settings or get_settings()).database_url
    if not url:
        raise DatabaseNotConfiguredError(
            "DATABASE_URL is not set; start the system with `otel-lab up`, "
            "or point DATABASE_URL at a PostgreSQL server"
        )
    return url


def _connect_args(settings: Settings) -> dict[str, Any]:
    # A database that is down or unreachable must fail a request fast (503), not hang it.
    timeout = max(1, round(settings.dependency_timeout_seconds))
    return {"connect_timeout": timeout, "options": "-c statement_timeout=5000"}


def _observe(sync_engine: Engine) -> None:
    if telemetry_enabled():
        SQLAlchemyInstrumentor().instrument(engine=sync_engine, enable_commenter=False)

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("query_start", []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _stop(conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - conn.info["query_start"].pop()
        operation = statement.lstrip().split(None, 1)[0].upper() if statement else "UNKNOWN"
        prom.DB_OPERATION.labels(operation).observe(elapsed)


def create_engine(settings: Settings | None = None) -> AsyncEngine:
    """The async engine the HTTP services use."""
    settings = settings or get_settings()
    engine = create_async_engine(
        database_url(settings),
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=settings.dependency_timeout_seconds,
        connect_args=_connect_args(settings),
    )
    _observe(engine.sync_engine)
    return engine


def create_blocking_engine(settings: Settings | None = None) -> Engine:
    """The synchronous engine the Celery worker uses (its tasks are plain functions)."""
    settings = settings or get_settings()
    engine = create_sync_engine(
        database_url(settings),
        pool_size=5,
        pool_pre_ping=True,
        pool_timeout=settings.dependency_timeout_seconds,
        connect_args=_connect_args(settings),
    )
    _observe(engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
