"""The api's item storage: the ``items`` table (``otel_lab.items``) through a session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otel_lab.items import Item, ItemCreate


async def add(session: AsyncSession, body: ItemCreate) -> Item:
    """Insert the item and commit; it comes back with its id and server defaults."""
    item = Item(name=body.name, description=body.description)
    session.add(item)
    await session.commit()
    return item


async def get(sessions: async_sessionmaker[AsyncSession], item_id: int) -> Item | None:
    """One item, on a session of its own (opened only on a cache miss)."""
    async with sessions() as session:
        return await session.get(Item, item_id)
