"""``POST /process`` (the chain's middle: order creation and pricing, then the audit log)
and the orders themselves (``GET /orders``, ``GET /orders/{id}``).

Recovery: a retried call with the same ``Idempotency-Key`` gets the order the first attempt
wrote. When audit-service cannot be reached (or refuses), the order still completes: the
audit is *deferred* (``orders.audit_status``), answered as such, and shown as an
``audit.deferred`` span event; the next call with the same key tries the audit again.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from opentelemetry import trace
from sqlalchemy import DateTime, Integer, Table, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab import faults
from otel_lab.services.deps import AutocommitDep, SettingsDep
from otel_lab.services.downstream import (
    Downstream,
    DownstreamError,
    SimulationDisabledError,
    idempotency_key,
    outbound_headers,
)
from otel_lab.services.errors import NotFoundError, ServiceError
from otel_lab.services.orders.models import Order, OrderItem
from otel_lab.services.orders.pricing import Line, default_items, price_order
from otel_lab.services.orders.schemas import (
    MAX_ID,
    OrderOut,
    OrderProcessRequest,
    OrderProcessResponse,
)

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("otel_lab.orders")
router = APIRouter(tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=MAX_ID, description="The order's id")]


def _audit_service(request: Request) -> Downstream:
    audit: Downstream = request.state.audit
    return audit


AuditServiceDep = Annotated[Downstream, Depends(_audit_service)]


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


# Declarative tables are typed FromClause; update() wants the Table they are.
_orders = cast(Table, Order.__table__)
_items = OrderItem.__table__
_ITEM_COLUMNS = ("sku", "name", "quantity", "unit_price", "line_total")


async def _items_of(connection: AsyncConnection, order_ids: Sequence[int]) -> dict[int, list]:
    by_order: dict[int, list] = {order_id: [] for order_id in order_ids}
    if order_ids:
        rows = await connection.execute(
            select(_items).where(_items.c.order_id.in_(order_ids)).order_by(_items.c.id)
        )
        for item in rows:
            by_order[item.order_id].append(item._mapping)
    return by_order


def _out(order: Mapping[Any, Any], items: Sequence[Mapping[Any, Any]]) -> OrderOut:
    return OrderOut.model_validate({**order, "items": items})


_SLOW_QUERY = text("SELECT pg_sleep(:seconds)")  # the slow-database fault (otel_lab.faults)

# One statement for the order and its lines (data-modifying CTEs): atomic on its own, one
# round trip, and one cached statement whatever the number of lines. An idempotency key that
# already has an order inserts nothing and returns no row. Written as text because
# SQLAlchemy 2.0 does not cache its PostgreSQL ``insert().on_conflict_*`` constructs (each
# call would compile the statement again: about a fifth of this service's CPU).
_INSERT_ORDER = text(
    """
    WITH new_order AS (
        INSERT INTO orders (user_id, action, status, currency, subtotal, discount, tax, total,
                            item_count, audit_status, idempotency_key, trace_id)
        VALUES (:user_id, :action, :status, :currency, :subtotal, :discount, :tax, :total,
                :item_count, :audit_status, :idempotency_key, :trace_id)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, created_at
    ), new_items AS (
        INSERT INTO order_items (order_id, sku, name, quantity, unit_price, line_total)
        SELECT new_order.id, line.sku, line.name, line.quantity, line.unit_price,
               line.line_total
        FROM new_order,
             unnest(CAST(:skus AS varchar[]), CAST(:names AS varchar[]),
                    CAST(:quantities AS integer[]), CAST(:unit_prices AS numeric[]),
                    CAST(:line_totals AS numeric[]))
                 WITH ORDINALITY AS line(sku, name, quantity, unit_price, line_total, position)
        ORDER BY line.position  -- ids in line order: reads list the items by id
    )
    SELECT id, created_at FROM new_order
    """
).columns(id=Integer, created_at=DateTime(timezone=True))


_ORDER_BY_KEY = select(_orders).where(_orders.c.idempotency_key == bindparam("key"))
_SET_AUDIT_STATUS = (
    update(_orders)
    .where(_orders.c.id == bindparam("order_id"))
    .values(audit_status=bindparam("new_status"))
)


def _line_arrays(lines: Sequence[Line]) -> dict[str, list[Any]]:
    return {
        "skus": [line.sku for line in lines],
        "names": [line.name for line in lines],
        "quantities": [line.quantity for line in lines],
        "unit_prices": [line.unit_price for line in lines],
        "line_totals": [line.line_total for line in lines],
    }


async def _stored_order(
    connection: AsyncConnection, key: str
) -> tuple[Mapping[str, Any], list[Any]] | None:
    result = await connection.execute(_ORDER_BY_KEY, {"key": key})
    found = result.first()
    if found is None:
        return None
    row = cast(Mapping[str, Any], found._mapping)  # RowMapping: keys are column names
    return row, (await _items_of(connection, [found.id]))[found.id]


async def _create_order(
    connection: AsyncConnection, body: OrderProcessRequest, key: str
) -> tuple[dict[str, Any], list, bool]:
    """Order creation and pricing in one statement; returns (order, items, replayed).

    A call whose key already has an order (a retry) gets that order back, not a second one.
    """
    with tracer.start_as_current_span(
        "order_creation",
        attributes={"operation.type": "business_logic", "user.id": str(body.user_id)},
    ) as span:
        if body.simulate_failure in ("order", "order_transient"):
            # A retry of a call that failed on purpose must find what the first one stored.
            if (stored := await _stored_order(connection, key)) is not None:
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
        priced = price_order(requested, body.user_tier)
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
            "trace_id": format(span.get_span_context().trace_id, "032x"),
        }
        params = {**order, **_line_arrays(priced.lines)}
        if faults.active("slow-database"):  # a real slow query, on the order's connection
            faults.mark(span, "slow-database")
            await connection.execute(_SLOW_QUERY, {"seconds": random.uniform(0.6, 0.9)})
        created = (await connection.execute(_INSERT_ORDER, params)).first()
        if created is None:  # the key has an order: a retry, or a concurrent attempt won
            stored = await _stored_order(connection, key)
            if stored is None:
                raise RuntimeError(f"order with idempotency key {key} vanished")
            return _replayed(span, *stored)
        order.update(id=created.id, created_at=created.created_at)
        items = [{name: getattr(line, name) for name in _ITEM_COLUMNS} for line in priced.lines]
        span.set_attributes(
            {
                "order.id": created.id,
                "order.total": float(priced.total),
                "order.item_count": len(items),
            }
        )
        return order, items, False


def _replayed(
    span: trace.Span, order: Mapping[str, Any], items: list
) -> tuple[dict[str, Any], list, bool]:
    span.add_event("order.idempotent_replay", {"order.id": order["id"]})
    span.set_attribute("order.id", order["id"])
    return dict(order), items, True


async def _write_audit(
    audit_service: Downstream,
    connection: AsyncConnection,
    order: dict[str, Any],
    body: OrderProcessRequest,
    key: str,
) -> dict[str, Any]:
    """Ask audit-service to log the order; on failure defer it (fallback), never fail."""
    payload: dict[str, Any] = {
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
        response = await audit_service.request(
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
            {"reason": str(exc)[:200], "downstream": exc.service, "order.id": order["id"]},
        )
        logger.warning(
            "audit_deferred", extra={"order_id": order["id"], "error": str(exc), "step": exc.step}
        )
    if order["audit_status"] != status:
        await connection.execute(_SET_AUDIT_STATUS, {"order_id": order["id"], "new_status": status})
        order["audit_status"] = status
    return audit


@router.post(
    "/process",
    responses={
        422: {"description": "Invalid input, or simulate_failure while simulations are off"},
        500: {"description": "The simulated order failure (simulate_failure: order)"},
        503: {"description": "The simulated transient failure's first attempt"},
    },
)
async def process(
    body: OrderProcessRequest,
    autocommit: AutocommitDep,
    audit_service: AuditServiceDep,
    settings: SettingsDep,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> OrderProcessResponse:
    """Create and price the order, then have it audited; answer the order and the audit."""
    if body.simulate_failure and not settings.simulated_failures:
        raise SimulationDisabledError()
    key = idempotency_key(idempotency_key_header)
    # Autocommit: each statement is its own transaction; none is held open across the call
    # to audit-service.
    async with autocommit.connect() as connection:
        order, items, replayed = await _create_order(connection, body, key)
        audit = await _write_audit(audit_service, connection, order, body, key)
    return OrderProcessResponse(order=_out(order, items), audit=audit, replayed=replayed)


@router.get("/orders")
async def list_orders(
    autocommit: AutocommitDep,
    response: Response,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[OrderOut]:
    """Newest first; the total is in ``X-Total-Count``."""
    query = select(_orders)
    if user_id is not None:
        query = query.where(_orders.c.user_id == user_id)
    async with autocommit.connect() as connection:
        total = await connection.scalar(select(func.count()).select_from(query.subquery()))
        page = query.order_by(_orders.c.id.desc()).limit(limit).offset(offset)
        orders = list(await connection.execute(page))
        items = await _items_of(connection, [order.id for order in orders])
    response.headers["X-Total-Count"] = str(total or 0)
    return [_out(order._mapping, items[order.id]) for order in orders]


@router.get("/orders/{order_id}", responses={404: {"description": "No such order"}})
async def get_order(order_id: OrderId, autocommit: AutocommitDep) -> OrderOut:
    async with autocommit.connect() as connection:
        order = (await connection.execute(select(_orders).where(_orders.c.id == order_id))).first()
        if order is None:
            raise NotFoundError(f"order {order_id} not found")
        items = (await _items_of(connection, [order_id]))[order_id]
    trace.get_current_span().set_attribute("order.id", order_id)
    return _out(order._mapping, items)
