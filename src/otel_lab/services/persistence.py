"""What the services' repositories share: pages of a query, and inserts that happen once.

``insert_once`` is how a retried chain call finds what its first attempt wrote instead of
writing it twice: the insert is ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING
RETURNING ...`` (written as text, because SQLAlchemy 2.0 does not cache its PostgreSQL
``insert().on_conflict_*`` constructs: a compile per request), and when it inserts nothing
the row already stored under the key is read.

The stored row is a replay only for the same request: each row keeps a fingerprint of the
request that wrote it (:func:`fingerprint`), compared on the read that finds it (no
statement of its own), and a key reused with a different request is a 422
(``IdempotencyKeyReusedError``). Rows written before fingerprints were kept have none and
replay as they always did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Executable, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otel_lab import db
from otel_lab.services.errors import IdempotencyKeyReusedError

T = TypeVar("T", bound=tuple[Any, ...])


async def paged(
    executor: AsyncSession | AsyncConnection, query: Select[T], limit: int, offset: int
) -> tuple[Select[T], int]:
    """The page of ``query`` to run, and the number of rows the whole query matches."""
    total = await executor.scalar(select(func.count()).select_from(query.subquery()))
    return query.limit(limit).offset(offset), int(total or 0)


def fingerprint(body: BaseModel, *, exclude: set[str]) -> str:
    """The request as the key's replay must match it: SHA-256 of the body's JSON (the
    model's own serialisation: fields in their declared order, defaults filled in, so
    ``{}`` and the same defaults spelt out are one request), without the fields in
    ``exclude`` that do not change what the request does. A few microseconds."""
    return hashlib.sha256(body.model_dump_json(exclude=exclude).encode()).hexdigest()


def check_replay(stored: db.Row, request_fingerprint: str | None) -> None:
    """Raise the 422 when ``stored`` (found by the key) was written by another request.
    A row without a fingerprint (written before they were kept) replays as before."""
    kept = getattr(stored, "request_fingerprint", None)
    if kept is not None and request_fingerprint is not None and kept != request_fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used for a different request: send that request "
            "again for its result, or use a new key for a new request"
        )


async def insert_once(
    connection: AsyncConnection,
    insert: Executable,
    values: Mapping[str, object],
    stored: Select[Any],
) -> tuple[db.Row, bool]:
    """Run ``insert``; when its idempotency key was written before (a retry, or a concurrent
    attempt that won), the row ``stored`` reads instead (built once, its parameter the
    values' ``idempotency_key``), both built once and run on the driver (``db.execute``).
    A stored row from another request (the values' ``request_fingerprint``) is a 422.
    Returns (row, replayed)."""
    created = (await db.execute(connection, insert, values)).first()
    if created is not None:
        return created, False
    key = {"idempotency_key": values["idempotency_key"]}
    existing = (await db.execute(connection, stored, key)).first()
    if existing is None:
        raise RuntimeError("a row whose idempotency key conflicted has vanished")
    request_fingerprint = values.get("request_fingerprint")
    check_replay(existing, request_fingerprint if isinstance(request_fingerprint, str) else None)
    return existing, True
