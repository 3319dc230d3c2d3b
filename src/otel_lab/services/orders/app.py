"""order-service: ``uvicorn --factory otel_lab.services.orders.app:create_app``.

Order creation and pricing; ``POST /process`` continues the chain to audit-service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from otel_lab.registry import AUDIT, ORDERS
from otel_lab.services.base import create_service, database, database_ready
from otel_lab.services.downstream import (
    Downstream,
    create_client,
    install_baggage_span_attributes,
)
from otel_lab.services.orders import routes
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import Telemetry

SERVICE_NAME = ORDERS.name


@asynccontextmanager
async def lifespan(settings: Settings, telemetry: Telemetry) -> AsyncIterator[dict[str, Any]]:
    async with database(settings, telemetry) as db, create_client(settings, telemetry) as client:
        audit = Downstream(
            AUDIT.name, settings.base_url(AUDIT), client, settings=settings, telemetry=telemetry
        )
        yield {**db, "audit": audit}


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    settings = settings or get_settings()
    app = create_service(
        SERVICE_NAME,
        settings,
        title="Otel Lab order-service",
        description="Orders and pricing; POST /process continues the chain to audit-service.",
        lifespan=lifespan,
        readiness_checks={"database": database_ready},
        telemetry=telemetry,
    )
    install_baggage_span_attributes(settings, telemetry)
    app.include_router(routes.router)
    return app
