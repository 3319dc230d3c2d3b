"""The api's item storage: the ``items`` table (``otel_lab.items``) as SQLAlchemy Core
statements on an autocommit connection: one statement each, built once, no ORM session
and no BEGIN/COMMIT round trips (docs/performance.md)."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from otel_lab import db
from otel_lab.items import ItemCreate, ItemRow, items

_INSERT_ITEM = db.Statement(
    insert(items)
    .values(name=bindparam("name"), description=bindparam("description"))
    .returning(*items.c),
    ItemRow,
)
_GET_ITEM = db.Statement(select(items).where(items.c.id == bindparam("item_id")), ItemRow)


async def add(autocommit: AsyncEngine, body: ItemCreate) -> ItemRow:
    """Insert the item; it comes back with its id and server defaults (RETURNING)."""
    async with autocommit.connect() as connection:
        result = await db.execute(
            connection, _INSERT_ITEM, {"name": body.name, "description": body.description}
        )
        return result.one()


async def get(autocommit: AsyncEngine, item_id: int) -> ItemRow | None:
    """One item (read only on a cache miss)."""
    async with autocommit.connect() as connection:
        return (await db.execute(connection, _GET_ITEM, {"item_id": item_id})).first()
