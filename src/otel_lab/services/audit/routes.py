"""``POST /process`` (the chain's end: write the audit log, answer the chain's summary) and
``GET /audit`` (the trail, newest first).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from opentelemetry import trace
from sqlalchemy import DateTime, Integer, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import JSONB

from otel_lab import faults
from otel_lab.registry import CHAIN
from otel_lab.services.audit.models import AuditLog
from otel_lab.services.audit.schemas import (
    MAX_ID,
    AuditLogOut,
    AuditProcessRequest,
    AuditProcessResponse,
    AuditRecord,
)
from otel_lab.services.deps import AutocommitDep, SessionDep, SettingsDep
from otel_lab.services.downstream import SimulationDisabledError, idempotency_key
from otel_lab.services.errors import ServiceError
from otel_lab.telemetry.context import request_id_var

tracer = trace.get_tracer("otel_lab.audit")
router = APIRouter(tags=["audit"])


class SimulatedFailureError(ServiceError):
    """Raised on request (``simulate_failure: "audit"``): order-service must fall back."""

    error_type = "simulated_failure"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, step="audit_logging")


_audit_logs = AuditLog.__table__
# A key that was written before inserts nothing and returns no row. Text, because SQLAlchemy
# 2.0 does not cache its PostgreSQL ``insert().on_conflict_*`` (a compile per request).
_INSERT_LOG = (
    text(
        """
        INSERT INTO audit_logs (event_type, user_id, order_id, action, details, trace_id,
                                request_id, idempotency_key)
        VALUES (:event_type, :user_id, :order_id, :action, :details, :trace_id,
                :request_id, :idempotency_key)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, created_at
        """
    )
    .bindparams(bindparam("details", type_=JSONB))
    .columns(id=Integer, created_at=DateTime(timezone=True))
)


def _summary(log: Mapping[Any, Any], replayed: bool) -> AuditProcessResponse:
    record = {
        "id": log["id"],
        "status": "recorded",
        "event_type": log["event_type"],
        "created_at": log["created_at"].isoformat(),
        "replayed": replayed,
        "summary": {
            "chain": list(CHAIN),
            "completed": True,
            "user_id": log["user_id"],
            "order_id": log["order_id"],
            "action": log["action"],
            "order_total": log["details"].get("order_total"),
            "item_count": log["details"].get("item_count"),
        },
    }
    return AuditProcessResponse(audit=AuditRecord.model_validate(record))


@router.post(
    "/process",
    responses={
        422: {"description": "Invalid input, or simulate_failure while simulations are off"},
        500: {"description": "The simulated audit failure (simulate_failure: audit)"},
    },
)
async def process(
    body: AuditProcessRequest,
    autocommit: AutocommitDep,
    settings: SettingsDep,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> AuditProcessResponse:
    """Write one audit row per idempotency key and close the chain."""
    if body.simulate_failure and not settings.simulated_failures:
        raise SimulationDisabledError()
    key = idempotency_key(idempotency_key_header)
    with tracer.start_as_current_span(
        "audit_log_write",
        attributes={
            "operation.type": "database",
            "database.system": "postgresql",
            "audit.event_type": body.event_type,
            "user.id": str(body.user_id),
        },
    ) as span:
        if body.order_id is not None:
            span.set_attribute("order.id", body.order_id)
        if body.simulate_failure == "audit":
            raise SimulatedFailureError("simulated failure in audit log write")
        if faults.active("audit-errors") and random.random() < 0.5:
            faults.mark(span, "audit-errors")
            raise SimulatedFailureError("fault audit-errors: audit write failed on purpose")
        log: dict[str, Any] = {
            "event_type": body.event_type,
            "user_id": body.user_id,
            "order_id": body.order_id,
            "action": body.action,
            "details": {"order_total": body.order_total, "item_count": body.item_count},
            "trace_id": format(span.get_span_context().trace_id, "032x"),
            "request_id": request_id_var.get(),
            "idempotency_key": key,
        }
        # One statement, autocommit; a key that was written before inserts nothing.
        async with autocommit.connect() as connection:
            created = (await connection.execute(_INSERT_LOG, log)).first()
            if created is None:  # a retry, or a concurrent attempt with the same key
                result = await connection.execute(
                    select(_audit_logs).where(_audit_logs.c.idempotency_key == key)
                )
                existing = result.one()
                span.add_event("audit.idempotent_replay", {"audit.id": existing.id})
                return _summary(existing._mapping, replayed=True)
        log.update(id=created.id, created_at=created.created_at)
        span.set_attribute("audit.id", created.id)
        span.add_event("chain.completed", {"chain.length": len(CHAIN)})
        return _summary(log, replayed=False)


@router.get("/audit")
async def list_audit(
    session: SessionDep,
    response: Response,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    order_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AuditLogOut]:
    """The audit trail, newest first; the total is in ``X-Total-Count``."""
    query = select(AuditLog)
    if user_id is not None:
        query = query.where(AuditLog.user_id == user_id)
    if order_id is not None:
        query = query.where(AuditLog.order_id == order_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    logs = await session.scalars(query.order_by(AuditLog.id.desc()).limit(limit).offset(offset))
    out = [AuditLogOut.model_validate(log) for log in logs]
    response.headers["X-Total-Count"] = str(total or 0)
    return out
