"""audit-service: ``uvicorn otel_lab.services.audit.app:app``.

The audit trail; ``POST /process`` ends the chain.
"""

from __future__ import annotations

from otel_lab.registry import AUDIT
from otel_lab.services.audit import routes
from otel_lab.services.base import create_service, database, database_ready
from otel_lab.services.downstream import install_baggage_span_attributes

SERVICE_NAME = AUDIT.name


app = create_service(
    SERVICE_NAME,
    title="Otel Lab audit-service",
    description="The audit trail; POST /process ends the service chain.",
    lifespan=database,
    readiness_checks={"database": database_ready},
)
install_baggage_span_attributes()
app.include_router(routes.router)
