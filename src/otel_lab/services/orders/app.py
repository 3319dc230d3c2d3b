"""order-service: ``uvicorn --factory otel_lab.services.orders.app:create_app``.

Order creation and pricing; ``POST /process`` continues the chain to audit-service.
"""

from __future__ import annotations

from fastapi import FastAPI

from otel_lab.registry import AUDIT, ORDERS
from otel_lab.services.base import create_chain_service
from otel_lab.services.orders import routes
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    return create_chain_service(
        ORDERS,
        settings,
        telemetry,
        description="Orders and pricing; POST /process continues the chain to audit-service.",
        routers=(routes.router,),
        next_hop=("audit", AUDIT),
    )
