"""audit-service: ``uvicorn --factory otel_lab.services.audit.app:create_app``.

The audit trail; ``POST /process`` ends the chain.
"""

from __future__ import annotations

from fastapi import FastAPI

from otel_lab.registry import AUDIT
from otel_lab.services.audit import routes
from otel_lab.services.base import create_service, database, database_ready
from otel_lab.services.downstream import install_baggage_span_attributes
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import Telemetry

SERVICE_NAME = AUDIT.name


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The app; ``telemetry`` None sets up the process's own (see ``create_service``)."""
    settings = settings or get_settings()
    app = create_service(
        SERVICE_NAME,
        settings,
        title="Otel Lab audit-service",
        description="The audit trail; POST /process ends the service chain.",
        lifespan=database,
        readiness_checks={"database": database_ready},
        telemetry=telemetry,
    )
    install_baggage_span_attributes(settings, telemetry)
    app.include_router(routes.router)
    return app
