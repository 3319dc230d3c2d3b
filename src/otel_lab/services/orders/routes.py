"""``POST /process`` (the chain's middle: order creation and pricing, then the audit log)
and the orders themselves (``GET /orders``, ``GET /orders/{id}``).

Recovery: a retried call with the same ``Idempotency-Key`` gets the order the first attempt
wrote. When audit-service cannot be reached (or refuses), the order still completes: the
audit is *deferred* (``orders.audit_status``), answered as such, and shown as an
``audit.deferred`` span event; the next call with the same key tries the audit again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import trace
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from otel_lab.services.base import error_response, record_error
from otel_lab.services.downstream import (
    DownstreamError,
    idempotency_key,
    outbound_headers,
)
from otel_lab.services.orders.models import Order, OrderItem
from otel_lab.services.orders.pricing import default_items, price_order
from otel_lab.services.orders.schemas import MAX_ID, OrderOut, OrderProcessRequest
from otel_lab.settings import get_settings

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("otel_lab.orders")
router = APIRouter(tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=MAX_ID, description="The order's id")]


class SimulatedFailureError(RuntimeError):
    """Raised on request (``simulate_failure``) so demos and tests see an error cross services."""


class SimulatedTransientError(RuntimeError):
    """Fails the first attempt for an idempotency key only: the caller's retry succeeds."""


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


async def _items_of(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, list]:
    by_order: dict[int, list] = {order_id: [] for order_id in order_ids}
    if order_ids:
        rows = await session.scalars(
            select(OrderItem).where(OrderItem.order_id.in_(order_ids)).order_by(OrderItem.id)
        )
        for item in rows:
            by_order[item.order_id].append(item)
    return by_order


def _out(order: Order, items: list) -> dict[str, Any]:
    out = OrderOut.model_validate(order).model_copy(update={"items": []})
    data = out.model_dump(mode="json")
    data["items"] = [
        {
            "sku": item.sku,
            "name": item.name,
            "quantity": item.quantity,
            "unit_price": float(item.unit_price),
            "line_total": float(item.line_total),
        }
        for item in items
    ]
    return data


async def _create_order(
    session: AsyncSession, body: OrderProcessRequest, key: str
) -> tuple[Order, list, bool]:
    """Order creation and pricing in one transaction; returns (order, items, replayed)."""
    with tracer.start_as_current_span(
        "order_creation",
        attributes={"operation.type": "business_logic", "user.id": str(body.user_id)},
    ) as span:
        existing = await session.scalar(select(Order).where(Order.idempotency_key == key))
        if existing is not None:
            span.add_event("order.idempotent_replay", {"order.id": existing.id})
            span.set_attribute("order.id", existing.id)
            return existing, (await _items_of(session, [existing.id]))[existing.id], True
        if body.simulate_failure == "order":
            raise SimulatedFailureError("simulated failure in order creation")
        if body.simulate_failure == "order_transient" and _fail_first_attempt(key):
            raise SimulatedTransientError("simulated transient failure in order creation")

        requested = (
            [(item.sku, item.quantity) for item in body.items]
            if body.items
            else default_items(body.user_id, body.action)
        )
        priced = price_order(requested, body.user_tier)
        trace_id = format(span.get_span_context().trace_id, "032x")
        order = Order(
            user_id=body.user_id,
            action=body.action,
            status="created",
            currency=priced.currency,
            subtotal=priced.subtotal,
            discount=priced.discount,
            tax=priced.tax,
            total=priced.total,
            item_count=len(priced.lines),
            audit_status="pending",
            idempotency_key=key,
            trace_id=trace_id,
        )
        session.add(order)
        await session.flush()
        items = [
            OrderItem(
                order_id=order.id,
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.line_total,
            )
            for line in priced.lines
        ]
        session.add_all(items)
        try:
            await session.commit()
        except IntegrityError:  # a concurrent attempt with the same key won the race
            await session.rollback()
            existing = await session.scalar(select(Order).where(Order.idempotency_key == key))
            if existing is None:
                raise
            span.add_event("order.idempotent_replay", {"order.id": existing.id})
            return existing, (await _items_of(session, [existing.id]))[existing.id], True
        span.set_attributes(
            {
                "order.id": order.id,
                "order.total": float(order.total),
                "order.item_count": len(items),
            }
        )
        return order, items, False


async def _write_audit(
    request: Request, session: AsyncSession, order: Order, body: OrderProcessRequest, key: str
) -> dict[str, Any]:
    """Ask audit-service to log the order; on failure defer it (fallback), never fail."""
    payload: dict[str, Any] = {
        "user_id": order.user_id,
        "order_id": order.id,
        "action": order.action,
        "event_type": "order_processed",
        "order_total": float(order.total),
        "item_count": order.item_count,
    }
    if body.simulate_failure == "audit":
        payload["simulate_failure"] = "audit"
    try:
        response = await request.app.state.audit.request(
            "POST",
            "/process",
            step="audit_logging",
            idempotent=True,  # audit-service honours the Idempotency-Key
            raise_for_status=True,
            json=payload,
            headers=outbound_headers(key),
        )
        audit: dict[str, Any] = response.json()["audit"]
        status = "recorded"
    except DownstreamError as exc:
        status = "deferred"
        audit = {"status": status, "reason": str(exc), "step": exc.step, "service": exc.service}
        trace.get_current_span().add_event(
            "audit.deferred",
            {"reason": str(exc)[:200], "downstream": exc.service, "order.id": order.id},
        )
        logger.warning(
            "audit_deferred", extra={"order_id": order.id, "error": str(exc), "step": exc.step}
        )
    if order.audit_status != status:
        await session.execute(update(Order).where(Order.id == order.id).values(audit_status=status))
        await session.commit()
        order.audit_status = status
    return audit


@router.post("/process")
async def process(
    body: OrderProcessRequest,
    request: Request,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    """Create and price the order, then have it audited; answer the order and the audit."""
    if body.simulate_failure and not get_settings().simulated_failures:
        return error_response(
            422, "simulate_failure is disabled (CHAIN_SIMULATED_FAILURES=false)", step="request"
        )
    key = idempotency_key(idempotency_key_header)
    async with request.app.state.sessions() as session:
        try:
            order, items, replayed = await _create_order(session, body, key)
        except SimulatedFailureError as exc:
            record_error(exc, "simulated_failure")
            return error_response(500, str(exc), step="order_creation")
        except SimulatedTransientError as exc:
            record_error(exc, "simulated_transient_failure")
            return error_response(503, str(exc), step="order_creation")
        audit = await _write_audit(request, session, order, body, key)
    return JSONResponse({"order": _out(order, items), "audit": audit, "replayed": replayed})


@router.get("/orders")
async def list_orders(
    request: Request,
    response: Response,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Newest first; the total is in ``X-Total-Count``."""
    query = select(Order)
    if user_id is not None:
        query = query.where(Order.user_id == user_id)
    async with request.app.state.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        orders = list(
            await session.scalars(query.order_by(Order.id.desc()).limit(limit).offset(offset))
        )
        items = await _items_of(session, [order.id for order in orders])
    response.headers["X-Total-Count"] = str(total or 0)
    return [_out(order, items[order.id]) for order in orders]


@router.get("/orders/{order_id}", response_model=None)
async def get_order(order_id: OrderId, request: Request) -> dict[str, Any] | JSONResponse:
    async with request.app.state.sessions() as session:
        order = await session.get(Order, order_id)
        if order is None:
            return error_response(404, f"order {order_id} not found")
        items = (await _items_of(session, [order_id]))[order_id]
    trace.get_current_span().set_attribute("order.id", order_id)
    return _out(order, items)
