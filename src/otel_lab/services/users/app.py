"""user-service: ``uvicorn --factory otel_lab.services.users.app:create_app``.

Users and todos and ``POST /process``, the start of the service chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from otel_lab.registry import ORDERS, USERS
from otel_lab.services.base import create_service, database, database_ready
from otel_lab.services.downstream import (
    Downstream,
    create_client,
    install_baggage_span_attributes,
)
from otel_lab.services.users import chain, routes
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import Telemetry

SERVICE_NAME = USERS.name


@asynccontextmanager
async def lifespan(settings: Settings, telemetry: Telemetry) -> AsyncIterator[dict[str, Any]]:
    async with database(settings, telemetry) as db, create_client(settings, telemetry) as client:
        orders = Downstream(
            ORDERS.name, settings.base_url(ORDERS), client, settings=settings, telemetry=telemetry
        )
        yield {**db, "orders": orders}


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    settings = settings or get_settings()
    app = create_service(
        SERVICE_NAME,
        settings,
        title="Otel Lab user-service",
        description="Users and todos (CRUD), and POST /process: the start of the service chain.",
        lifespan=lifespan,
        readiness_checks={"database": database_ready},
        telemetry=telemetry,
    )
    install_baggage_span_attributes(settings, telemetry)
    app.include_router(chain.router)
    app.include_router(routes.users_router)
    app.include_router(routes.todos_router)
    return app
