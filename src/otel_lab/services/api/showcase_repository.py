"""The showcase's scratch rows (``GET /db-operation``): rows of the ``items`` table with a
status no other code path uses, written and deleted within one transaction of the caller's
connection, one statement per step.

Statements built once and run on the driver (``db.execute``, in the caller's transaction):
the rows are written by one ``INSERT ... SELECT`` over an array of descriptions and the
ids are passed as one array (``= ANY(:ids)``), so no statement depends on the number of
rows (SQLAlchemy's expanding ``IN`` list and multi-row insert, which ``db.execute`` does
not compile, cost the api about twice as much per step; docs/performance.md).
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import ARRAY, Integer, any_, bindparam, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab import db
from otel_lab.items import items as _items

SCRATCH_NAME = "db-operation scratch row"
SCRATCH_STATUS = "scratch"


class ScratchId(NamedTuple):
    id: int


_ids = any_(bindparam("ids", type_=ARRAY(Integer)))
_ADD = db.Statement(
    text(
        """
        INSERT INTO items (name, description, status)
        SELECT :name, description, :status
        FROM unnest(CAST(:descriptions AS text[])) WITH ORDINALITY AS scratch(description, n)
        ORDER BY scratch.n
        RETURNING id
        """
    ).columns(id=Integer),
    ScratchId,
)
_COUNT = db.Statement(
    select(func.count().label("total")).select_from(_items).where(_items.c.id == _ids), db.Count
)
_TOUCH = update(_items).where(_items.c.id == _ids).values(description=bindparam("description"))
_REMOVE = delete(_items).where(_items.c.id == _ids)


async def add(connection: AsyncConnection, rows: int) -> list[int]:
    """Insert ``rows`` scratch rows; their ids, ascending."""
    descriptions = [f"scratch {n}" for n in range(1, rows + 1)]
    params = {"name": SCRATCH_NAME, "status": SCRATCH_STATUS, "descriptions": descriptions}
    return sorted(row.id for row in await db.execute(connection, _ADD, params))


async def count(connection: AsyncConnection, ids: list[int]) -> int:
    return (await db.execute(connection, _COUNT, {"ids": ids})).one().total


async def touch(connection: AsyncConnection, ids: list[int]) -> None:
    await db.execute(connection, _TOUCH, {"ids": ids, "description": "scratch, updated"})


async def remove(connection: AsyncConnection, ids: list[int]) -> None:
    await db.execute(connection, _REMOVE, {"ids": ids})
