"""audit-service's storage: the ``audit_logs`` table, written once per idempotency key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import DateTime, Integer, bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from otel_lab import db
from otel_lab.services.audit.models import AuditLog
from otel_lab.services.persistence import insert_once, paged

_audit_logs = AuditLog.__table__
# A key that was written before inserts nothing and returns no row (services/persistence.py).
_INSERT_LOG = (
    text(
        """
        INSERT INTO audit_logs (event_type, user_id, order_id, action, details, trace_id,
                                request_id, idempotency_key, request_fingerprint)
        VALUES (:event_type, :user_id, :order_id, :action, :details, :trace_id,
                :request_id, :idempotency_key, :request_fingerprint)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, created_at
        """
    )
    .bindparams(bindparam("details", type_=JSONB))
    .columns(id=Integer, created_at=DateTime(timezone=True))
)
_STORED_LOG = select(_audit_logs).where(
    _audit_logs.c.idempotency_key == bindparam("idempotency_key")
)


async def insert_log(autocommit: AsyncEngine, log: dict[str, Any]) -> tuple[db.Row, bool]:
    """Write ``log`` (one statement, autocommit); returns (row, replayed). A new row has only
    ``id`` and ``created_at``; a replayed one (the key was written before) is the whole row.
    A key written before by another request is a 422 (``persistence.check_replay``)."""
    async with autocommit.connect() as connection:
        return await insert_once(connection, _INSERT_LOG, log, _STORED_LOG)


async def list_logs(
    session: AsyncSession, *, user_id: int | None, order_id: int | None, limit: int, offset: int
) -> tuple[Sequence[AuditLog], int]:
    """The trail, newest first, and how many rows match."""
    query = select(AuditLog)
    if user_id is not None:
        query = query.where(AuditLog.user_id == user_id)
    if order_id is not None:
        query = query.where(AuditLog.order_id == order_id)
    page, total = await paged(session, query.order_by(AuditLog.id.desc()), limit, offset)
    return (await session.scalars(page)).all(), total
