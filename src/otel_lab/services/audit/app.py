"""audit-service: ``uvicorn --factory otel_lab.services.audit.app:create_app``.

The audit trail; ``POST /process`` ends the chain.
"""

from __future__ import annotations

from fastapi import FastAPI

from otel_lab.registry import AUDIT
from otel_lab.services.audit import routes
from otel_lab.services.base import create_chain_service
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    return create_chain_service(
        AUDIT,
        settings,
        telemetry,
        description="The audit trail; POST /process ends the service chain.",
        routers=(routes.router,),
    )
