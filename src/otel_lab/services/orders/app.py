"""order-service: ``uvicorn otel_lab.services.orders.app:app``.

Order creation and pricing; ``POST /process`` continues the chain to audit-service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from otel_lab.registry import AUDIT, ORDERS
from otel_lab.services.base import create_service, database, database_ready
from otel_lab.services.downstream import (
    Downstream,
    create_client,
    install_baggage_span_attributes,
)
from otel_lab.services.orders import routes
from otel_lab.settings import get_settings

SERVICE_NAME = ORDERS.name


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with database(app), create_client() as client:
        app.state.audit = Downstream(AUDIT.name, get_settings().base_url(AUDIT), client)
        yield


app = create_service(
    SERVICE_NAME,
    title="Otel Lab order-service",
    description="Orders and pricing; POST /process continues the chain to audit-service.",
    lifespan=lifespan,
    readiness_checks={"database": database_ready},
)
install_baggage_span_attributes()
app.include_router(routes.router)
