"""order-service's rules: price and store the order once per idempotency key, then have it
audited, deferring the audit when audit-service cannot take it.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab import faults
from otel_lab.jsontypes import JSONObject
from otel_lab.services.downstream import Downstream, DownstreamError, call_next_hop
from otel_lab.services.errors import ServiceError
from otel_lab.services.orders import pricing, repository
from otel_lab.services.orders.pricing import default_items, price_order
from otel_lab.services.orders.schemas import OrderOut, OrderProcessRequest
from otel_lab.services.persistence import fingerprint
from otel_lab.telemetry import Telemetry

logger = logging.getLogger(__name__)
SCOPE = "otel_lab.orders"

_ITEM_COLUMNS = ("sku", "name", "quantity", "unit_price", "line_total")

# What a retry may change without being another request: the demo's failure switch (a
# retry without it writes the audit that was deferred), and the tier, which user-service
# reads from the user (a tier changed between a call and its retry is the same order).
REPLAY_EXCLUDES = {"simulate_failure", "user_tier"}


class SimulatedFailureError(ServiceError):
    """Raised on request (``simulate_failure``) so demos and tests see an error cross services."""

    error_type = "simulated_failure"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, step="order_creation")


class SimulatedTransientError(SimulatedFailureError):
    """Fails the first attempt for an idempotency key only: the caller's retry succeeds."""

    status_code = 503
    error_type = "simulated_transient_failure"


# Keys whose first attempt already failed on purpose (bounded: a demo aid, not state).
_transient_failed: OrderedDict[str, None] = OrderedDict()
_TRANSIENT_MEMORY = 1024


def _fail_first_attempt(key: str) -> bool:
    if key in _transient_failed:
        return False
    _transient_failed[key] = None
    if len(_transient_failed) > _TRANSIENT_MEMORY:
        _transient_failed.popitem(last=False)
    return True


def order_out(order: Mapping[Any, Any], items: Sequence[Mapping[Any, Any]]) -> OrderOut:
    return OrderOut.model_validate({**order, "items": items})


async def create_order(
    connection: AsyncConnection, body: OrderProcessRequest, key: str, telemetry: Telemetry
) -> tuple[dict[str, Any], list[Mapping[Any, Any]], bool]:
    """Order creation and pricing in one statement; returns (order, items, replayed).

    A call whose key already has an order (a retry) gets that order back, not a second one;
    a different request with that key is a 422 (:data:`REPLAY_EXCLUDES`).
    """
    request_fingerprint = fingerprint(body, exclude=REPLAY_EXCLUDES)
    with telemetry.tracer(SCOPE).start_as_current_span(
        "order_creation",
        attributes={"operation.type": "business_logic", "user.id": str(body.user_id)},
    ) as span:
        if body.simulate_failure in ("order", "order_transient"):
            # A retry of a call that failed on purpose must find what the first one stored.
            stored = await repository.stored_order(connection, key, request_fingerprint)
            if stored is not None:
                return _replayed(span, *stored)
            if body.simulate_failure == "order":
                raise SimulatedFailureError("simulated failure in order creation")
            if _fail_first_attempt(key):
                raise SimulatedTransientError("simulated transient failure in order creation")

        requested = (
            [(item.sku, item.quantity) for item in body.items]
            if body.items
            else default_items(body.user_id, body.action)
        )
        priced = price_order(requested, body.user_tier, telemetry.tracer(pricing.SCOPE))
        order: dict[str, Any] = {
            "user_id": body.user_id,
            "action": body.action,
            "status": "created",
            "currency": priced.currency,
            "subtotal": priced.subtotal,
            "discount": priced.discount,
            "tax": priced.tax,
            "total": priced.total,
            "item_count": len(priced.lines),
            "audit_status": "pending",
            "idempotency_key": key,
            "request_fingerprint": request_fingerprint,
            "trace_id": format(span.get_span_context().trace_id, "032x"),
        }
        if faults.active("slow-database"):  # a real slow query, on the order's connection
            faults.mark(span, "slow-database")
            await connection.execute(repository.SLOW_QUERY, {"seconds": random.uniform(0.6, 0.9)})
        _leak_memory(span)
        created, stored = await repository.insert_order(connection, order, priced.lines)
        if stored is not None:  # the key has an order: a retry, or a concurrent attempt won
            return _replayed(span, *stored)
        order.update(id=created.id, created_at=created.created_at)
        items: list[Mapping[Any, Any]] = [
            {name: getattr(line, name) for name in _ITEM_COLUMNS} for line in priced.lines
        ]
        span.set_attributes(
            {
                "order.id": created.id,
                "order.total": float(priced.total),
                "order.item_count": len(items),
            }
        )
        return order, items, False


# memory-leak: what an unbounded in-process cache does; cleared once the fault is off.
_LEAK_BYTES, _LEAK_MAX = 2 * 1024 * 1024, 512
_leaked: list[bytes] = []


def _leak_memory(span: trace.Span) -> None:
    if faults.active("memory-leak"):
        faults.mark(span, "memory-leak")
        if len(_leaked) < _LEAK_MAX:
            _leaked.append(b"\x01" * _LEAK_BYTES)  # written, so it counts in RSS
    elif _leaked:
        _leaked.clear()


def _replayed(
    span: trace.Span, order: Mapping[Any, Any], items: list[Mapping[Any, Any]]
) -> tuple[dict[str, Any], list[Mapping[Any, Any]], bool]:
    span.add_event("order.idempotent_replay", {"order.id": order["id"]})
    span.set_attribute("order.id", order["id"])
    return dict(order), items, True


async def write_audit(
    audit_service: Downstream,
    connection: AsyncConnection,
    order: dict[str, Any],
    body: OrderProcessRequest,
    key: str,
) -> dict[str, Any]:
    """Ask audit-service to log the order; on failure defer it (fallback), never fail."""
    payload: JSONObject = {
        "user_id": order["user_id"],
        "order_id": order["id"],
        "action": order["action"],
        "event_type": "order_processed",
        "order_total": float(order["total"]),
        "item_count": order["item_count"],
    }
    if body.simulate_failure == "audit":
        payload["simulate_failure"] = "audit"
    try:
        response = await call_next_hop(audit_service, "audit_logging", payload, key)
        audit: dict[str, Any] = response.json()["audit"]
        status = "recorded"
    except DownstreamError as exc:
        status = "deferred"
        audit = {"status": status, "reason": str(exc), "step": exc.step, "service": exc.service}
        trace.get_current_span().add_event(
            "audit.deferred",
            {"reason": str(exc)[:200], "downstream": exc.service, "order.id": order["id"]},
        )
        logger.warning(
            "audit_deferred", extra={"order_id": order["id"], "error": str(exc), "step": exc.step}
        )
    if order["audit_status"] != status:
        await repository.set_audit_status(connection, order["id"], status)
        order["audit_status"] = status
    return audit
