"""The showcase's scratch rows (``GET /db-operation``): rows of the ``items`` table with a
status no other code path uses, written and deleted within one transaction of the caller's
connection, one statement per step.

Core statements built once (the ids as an expanding parameter), on a connection rather than
an ORM session: the session's bulk-insert path, identity map and per-statement ORM
compilation cost the api more than the rest of the request (docs/performance.md).
"""

from __future__ import annotations

from sqlalchemy import Integer, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab.items import items as _items

SCRATCH_NAME = "db-operation scratch row"

_ids = bindparam("ids", type_=Integer, expanding=True)
_ADD = insert(_items).returning(_items.c.id)
_COUNT = select(func.count()).select_from(_items).where(_items.c.id.in_(_ids))
_TOUCH = update(_items).where(_items.c.id.in_(_ids)).values(description="scratch, updated")
_REMOVE = delete(_items).where(_items.c.id.in_(_ids))


async def add(connection: AsyncConnection, rows: int) -> list[int]:
    """Insert ``rows`` scratch rows; their ids, ascending."""
    result = await connection.execute(
        _ADD,
        [
            {"name": SCRATCH_NAME, "description": f"scratch {n}", "status": "scratch"}
            for n in range(1, rows + 1)
        ],
    )
    return sorted(result.scalars().all())


async def count(connection: AsyncConnection, ids: list[int]) -> int:
    return await connection.scalar(_COUNT, {"ids": ids}) or 0


async def touch(connection: AsyncConnection, ids: list[int]) -> None:
    await connection.execute(_TOUCH, {"ids": ids})


async def remove(connection: AsyncConnection, ids: list[int]) -> None:
    await connection.execute(_REMOVE, {"ids": ids})
