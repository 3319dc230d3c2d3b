"""``POST /process`` (the chain's end: write the audit log, answer the chain's summary) and
``GET /audit`` (the trail, newest first). Routes -> ``service`` -> ``repository``.
"""

from __future__ import annotations

from fastapi import APIRouter, Header, Response

from otel_lab.services.audit import repository, service
from otel_lab.services.audit.schemas import AuditLogOut, AuditProcessRequest, AuditProcessResponse
from otel_lab.services.deps import AutocommitDep, SessionDep, SettingsDep, TelemetryDep
from otel_lab.services.downstream import SimulationDisabledError, idempotency_key
from otel_lab.services.params import IdFilter, Limit, Offset, set_total

router = APIRouter(tags=["audit"])


@router.post(
    "/process",
    responses={
        422: {
            "description": "Invalid input, simulate_failure while simulations are off, or an "
            "Idempotency-Key used for a different request"
        },
        500: {"description": "The simulated audit failure (simulate_failure: audit)"},
    },
)
async def process(
    body: AuditProcessRequest,
    autocommit: AutocommitDep,
    settings: SettingsDep,
    telemetry: TelemetryDep,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> AuditProcessResponse:
    """Write one audit row per idempotency key and close the chain."""
    if body.simulate_failure and not settings.simulated_failures:
        raise SimulationDisabledError()
    key = idempotency_key(idempotency_key_header)
    return await service.record(autocommit, body, key, telemetry)


@router.get("/audit")
async def list_audit(
    session: SessionDep,
    response: Response,
    user_id: IdFilter = None,
    order_id: IdFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[AuditLogOut]:
    """The audit trail, newest first; the total is in ``X-Total-Count``."""
    logs, total = await repository.list_logs(
        session, user_id=user_id, order_id=order_id, limit=limit, offset=offset
    )
    set_total(response, total)
    return [AuditLogOut.model_validate(log) for log in logs]
