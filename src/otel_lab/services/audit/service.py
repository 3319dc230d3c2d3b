"""audit-service's rules: one audit row per idempotency key, and the chain's summary."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from otel_lab import faults
from otel_lab.registry import CHAIN
from otel_lab.services.audit import repository
from otel_lab.services.audit.schemas import AuditProcessRequest, AuditProcessResponse, AuditRecord
from otel_lab.services.errors import ServiceError
from otel_lab.services.persistence import fingerprint
from otel_lab.telemetry import Telemetry
from otel_lab.telemetry.context import request_id_var

SCOPE = "otel_lab.audit"


class SimulatedFailureError(ServiceError):
    """Raised on request (``simulate_failure: "audit"``): order-service must fall back."""

    error_type = "simulated_failure"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, step="audit_logging")


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


async def record(
    autocommit: AsyncEngine, body: AuditProcessRequest, key: str, telemetry: Telemetry
) -> AuditProcessResponse:
    """Write the audit row for ``key`` (once) and close the chain."""
    with telemetry.tracer(SCOPE).start_as_current_span(
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
            # a retry without the failure switch is the same request
            "request_fingerprint": fingerprint(body, exclude={"simulate_failure"}),
        }
        row, replayed = await repository.insert_log(autocommit, log)
        if replayed:  # a retry, or a concurrent attempt with the same key
            span.add_event("audit.idempotent_replay", {"audit.id": row.id})
            return _summary(row._mapping, replayed=True)
        log.update(id=row.id, created_at=row.created_at)
        span.set_attribute("audit.id", row.id)
        span.add_event("chain.completed", {"chain.length": len(CHAIN)})
        return _summary(log, replayed=False)
