"""audit-service: ``uvicorn otel_lab.services.audit.app:app``.

The audit trail; ``POST /process`` ends the chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from otel_lab.db import create_engine, session_factory
from otel_lab.services.audit import routes
from otel_lab.services.base import create_service
from otel_lab.services.downstream import install_baggage_span_attributes

SERVICE_NAME = "audit-service"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine()
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    try:
        yield
    finally:
        await engine.dispose()


async def _database_ready(app: FastAPI) -> None:
    async with app.state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


app = create_service(
    SERVICE_NAME,
    title="Otel Lab audit-service",
    description="The audit trail; POST /process ends the service chain.",
    lifespan=lifespan,
    readiness_checks={"database": _database_ready},
)
install_baggage_span_attributes()
app.include_router(routes.router)
