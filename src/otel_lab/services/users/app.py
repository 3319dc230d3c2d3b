"""user-service: ``uvicorn otel_lab.services.users.app:app``.

Users and todos and ``POST /process``, the start of the service chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from otel_lab.registry import ORDERS, USERS
from otel_lab.services.base import create_service, database, database_ready, error_response
from otel_lab.services.downstream import (
    Downstream,
    create_client,
    install_baggage_span_attributes,
)
from otel_lab.services.users import chain, routes
from otel_lab.services.users.service import DomainError
from otel_lab.settings import get_settings

SERVICE_NAME = USERS.name


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with database(app), create_client() as client:
        app.state.orders = Downstream(ORDERS.name, get_settings().base_url(ORDERS), client)
        yield


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status_code, str(exc))


app = create_service(
    SERVICE_NAME,
    title="Otel Lab user-service",
    description="Users and todos (CRUD), and POST /process: the start of the service chain.",
    lifespan=lifespan,
    readiness_checks={"database": database_ready},
)
install_baggage_span_attributes()
app.add_exception_handler(DomainError, _domain_error)
app.include_router(chain.router)
app.include_router(routes.users_router)
app.include_router(routes.todos_router)
