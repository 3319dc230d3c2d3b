"""What the services' repositories share: pages of a query, and inserts that happen once.

``insert_once`` is how a retried chain call finds what its first attempt wrote instead of
writing it twice: the insert is ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING
RETURNING ...`` (written as text, because SQLAlchemy 2.0 does not cache its PostgreSQL
``insert().on_conflict_*`` constructs: a compile per request), and when it inserts nothing
the row already stored under the key is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Executable, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otel_lab import db

T = TypeVar("T", bound=tuple[Any, ...])


async def paged(
    executor: AsyncSession | AsyncConnection, query: Select[T], limit: int, offset: int
) -> tuple[Select[T], int]:
    """The page of ``query`` to run, and the number of rows the whole query matches."""
    total = await executor.scalar(select(func.count()).select_from(query.subquery()))
    return query.limit(limit).offset(offset), int(total or 0)


async def insert_once(
    connection: AsyncConnection,
    insert: Executable,
    values: Mapping[str, object],
    stored: Select[Any],
) -> tuple[db.Row, bool]:
    """Run ``insert``; when its idempotency key was written before (a retry, or a concurrent
    attempt that won), the row ``stored`` reads instead (built once, its parameter the
    values' ``idempotency_key``), both built once and run on the driver (``db.execute``).
    Returns (row, replayed)."""
    created = (await db.execute(connection, insert, values)).first()
    if created is not None:
        return created, False
    key = {"idempotency_key": values["idempotency_key"]}
    existing = (await db.execute(connection, stored, key)).first()
    if existing is None:
        raise RuntimeError("a row whose idempotency key conflicted has vanished")
    return existing, True
