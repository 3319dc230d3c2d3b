"""order-service: ``uvicorn otel_lab.services.orders.app:app``.

Order creation and pricing; ``POST /process`` continues the chain to audit-service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from otel_lab.db import create_engine, session_factory
from otel_lab.services.base import create_service
from otel_lab.services.downstream import (
    Downstream,
    create_client,
    install_baggage_span_attributes,
)
from otel_lab.services.orders import routes
from otel_lab.settings import get_settings

SERVICE_NAME = "order-service"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine()
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    client = create_client()
    app.state.audit = Downstream("audit-service", get_settings().audit_service_base_url, client)
    try:
        yield
    finally:
        await client.aclose()
        await engine.dispose()


async def _database_ready(app: FastAPI) -> None:
    async with app.state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


app = create_service(
    SERVICE_NAME,
    title="Otel Lab order-service",
    description="Orders and pricing; POST /process continues the chain to audit-service.",
    lifespan=lifespan,
    readiness_checks={"database": _database_ready},
)
install_baggage_span_attributes()
app.include_router(routes.router)
