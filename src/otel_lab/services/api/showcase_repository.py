"""The showcase's scratch rows (``GET /db-operation``): rows of the ``items`` table with a
status no other code path uses, written and deleted within one transaction of the caller's
session, one statement per step."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from otel_lab.items import Item

SCRATCH_NAME = "db-operation scratch row"


async def add(session: AsyncSession, rows: int) -> list[int]:
    """Insert ``rows`` scratch rows; their ids, ascending."""
    result = await session.execute(
        insert(Item).returning(Item.id),
        [
            {"name": SCRATCH_NAME, "description": f"scratch {n}", "status": "scratch"}
            for n in range(1, rows + 1)
        ],
    )
    return sorted(result.scalars().all())


async def count(session: AsyncSession, ids: list[int]) -> int:
    return await session.scalar(select(func.count()).select_from(Item).where(Item.id.in_(ids))) or 0


async def touch(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(
        update(Item).where(Item.id.in_(ids)).values(description="scratch, updated")
    )


async def remove(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(delete(Item).where(Item.id.in_(ids)))
