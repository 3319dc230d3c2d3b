"""Request and response bodies of order-service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from otel_lab.services.orders.pricing import CATALOG
from otel_lab.services.params import RowId

Sku = Literal[tuple(sorted(CATALOG))]  # type: ignore[valid-type]
Action = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku  # type: ignore[valid-type]
    quantity: int = Field(1, ge=1, le=100)


class OrderProcessRequest(BaseModel):
    """What user-service sends: who, what for, and the tier the pricing uses."""

    model_config = ConfigDict(extra="forbid")

    user_id: RowId
    action: Action
    user_tier: Literal["standard", "premium", "gold"] = "standard"
    # Absent in the chain's requests: derived from user and action (see pricing).
    items: list[OrderItemIn] | None = Field(None, min_length=1, max_length=20)
    simulate_failure: Literal["order", "order_transient", "audit"] | None = None


class OrderItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    quantity: int
    unit_price: float
    line_total: float


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    action: str
    status: str
    currency: str
    item_count: int
    subtotal: float
    discount: float
    tax: float
    total: float
    audit_status: str
    trace_id: str | None
    created_at: datetime
    items: list[OrderItemOut] = []


class OrderProcessResponse(BaseModel):
    """The stored order, its audit, and whether an earlier attempt with the same
    ``Idempotency-Key`` had written it (``replayed``)."""

    order: OrderOut
    # audit-service's record as it answered it, or ``{"status": "deferred", "reason",
    # "step", "service"}`` when it could not be written (the order completes anyway).
    audit: dict[str, Any]
    replayed: bool
