"""Request and response bodies of audit-service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from otel_lab.services.params import RowId

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class AuditProcessRequest(BaseModel):
    """What order-service sends once the order is stored."""

    model_config = ConfigDict(extra="forbid")

    user_id: RowId
    order_id: RowId | None = None
    action: Token
    event_type: Token = "order_processed"
    order_total: float | None = Field(None, ge=0, le=1e9)
    item_count: int | None = Field(None, ge=0, le=10_000)
    simulate_failure: Literal["audit"] | None = None


class AuditLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_type: str
    user_id: int
    order_id: int | None
    action: str
    details: dict[str, JsonValue]
    trace_id: str | None
    request_id: str | None
    created_at: datetime


class ChainSummary(BaseModel):
    chain: list[str]
    completed: bool
    user_id: int
    order_id: int | None
    action: str
    order_total: float | None
    item_count: int | None


class AuditRecord(BaseModel):
    """The audit row as the chain reports it; ``replayed``: written by an earlier attempt."""

    id: int
    status: Literal["recorded"]
    event_type: str
    created_at: str  # ISO 8601, as datetime.isoformat() writes it
    replayed: bool
    summary: ChainSummary


class AuditProcessResponse(BaseModel):
    audit: AuditRecord
