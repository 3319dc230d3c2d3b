"""order-service's storage: orders and their lines, written once per idempotency key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import DateTime, Integer, Table, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab import db
from otel_lab.services.orders.models import Order, OrderItem
from otel_lab.services.orders.pricing import Line
from otel_lab.services.persistence import check_replay, insert_once, paged

# Declarative tables are typed FromClause; update() wants the Table they are.
_orders = cast(Table, Order.__table__)
_items = OrderItem.__table__

SLOW_QUERY = text("SELECT pg_sleep(:seconds)")  # the slow-database fault (otel_lab.faults)

# One statement for the order and its lines (data-modifying CTEs): atomic on its own, one
# round trip, and one cached statement whatever the number of lines. An idempotency key that
# already has an order inserts nothing and returns no row. Written as text because
# SQLAlchemy 2.0 does not cache its PostgreSQL ``insert().on_conflict_*`` constructs (each
# call would compile the statement again: about a fifth of this service's CPU).
_INSERT_ORDER = text(
    """
    WITH new_order AS (
        INSERT INTO orders (user_id, action, status, currency, subtotal, discount, tax, total,
                            item_count, audit_status, idempotency_key, request_fingerprint,
                            trace_id)
        VALUES (:user_id, :action, :status, :currency, :subtotal, :discount, :tax, :total,
                :item_count, :audit_status, :idempotency_key, :request_fingerprint, :trace_id)
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


_SET_AUDIT_STATUS = (
    update(_orders)
    .where(_orders.c.id == bindparam("order_id"))
    .values(audit_status=bindparam("new_status"))
)

OrderRow = tuple[Mapping[Any, Any], list[Mapping[Any, Any]]]


async def items_of(
    connection: AsyncConnection, order_ids: Sequence[int]
) -> dict[int, list[Mapping[Any, Any]]]:
    """The lines of each order, in line order."""
    by_order: dict[int, list[Mapping[Any, Any]]] = {order_id: [] for order_id in order_ids}
    if order_ids:
        rows = await connection.execute(
            select(_items).where(_items.c.order_id.in_(order_ids)).order_by(_items.c.id)
        )
        for item in rows:
            by_order[item.order_id].append(item._mapping)
    return by_order


_BY_KEY = select(_orders).where(_orders.c.idempotency_key == bindparam("idempotency_key"))


async def _with_items(connection: AsyncConnection, found: db.Row) -> OrderRow:
    return found._mapping, (await items_of(connection, [found.id]))[found.id]


async def stored_order(
    connection: AsyncConnection, key: str, request_fingerprint: str
) -> OrderRow | None:
    """The order (and lines) an earlier attempt with ``key`` wrote, if any; a 422 when that
    attempt was another request (``persistence.check_replay``)."""
    found = (await db.execute(connection, _BY_KEY, {"idempotency_key": key})).first()
    if found is None:
        return None
    check_replay(found, request_fingerprint)
    return await _with_items(connection, found)


def _line_arrays(lines: Sequence[Line]) -> dict[str, list[Any]]:
    return {
        "skus": [line.sku for line in lines],
        "names": [line.name for line in lines],
        "quantities": [line.quantity for line in lines],
        "unit_prices": [line.unit_price for line in lines],
        "line_totals": [line.line_total for line in lines],
    }


async def insert_order(
    connection: AsyncConnection, order: Mapping[Any, Any], lines: Sequence[Line]
) -> tuple[db.Row, OrderRow | None]:
    """Write the order and its lines in one statement. Returns the new row's ``id`` and
    ``created_at`` and None, or, when the key already has an order (a retry, or a concurrent
    attempt won), that order and its lines; a 422 when that order was another request's."""
    row, replayed = await insert_once(
        connection, _INSERT_ORDER, {**order, **_line_arrays(lines)}, _BY_KEY
    )
    return row, (await _with_items(connection, row)) if replayed else None


async def set_audit_status(connection: AsyncConnection, order_id: int, status: str) -> None:
    await db.execute(connection, _SET_AUDIT_STATUS, {"order_id": order_id, "new_status": status})


async def list_orders(
    connection: AsyncConnection, *, user_id: int | None, limit: int, offset: int
) -> tuple[list[OrderRow], int]:
    """Newest first, with their lines, and how many orders match."""
    query = select(_orders)
    if user_id is not None:
        query = query.where(_orders.c.user_id == user_id)
    page, total = await paged(connection, query.order_by(_orders.c.id.desc()), limit, offset)
    orders = list(await connection.execute(page))
    items = await items_of(connection, [order.id for order in orders])
    return [(order._mapping, items[order.id]) for order in orders], total


async def get_order(connection: AsyncConnection, order_id: int) -> OrderRow | None:
    found = (await connection.execute(select(_orders).where(_orders.c.id == order_id))).first()
    return None if found is None else await _with_items(connection, found)
