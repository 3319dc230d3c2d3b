"""user-service: ``uvicorn --factory otel_lab.services.users.app:create_app``.

Users and todos and ``POST /process``, the start of the service chain.
"""

from __future__ import annotations

from fastapi import FastAPI

from otel_lab.registry import ORDERS, USERS
from otel_lab.services.base import create_chain_service
from otel_lab.services.users import chain, routes
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    return create_chain_service(
        USERS,
        settings,
        telemetry,
        description="Users and todos (CRUD), and POST /process: the start of the service chain.",
        routers=(chain.router, routes.users_router, routes.todos_router),
        next_hop=("orders", ORDERS),
    )
