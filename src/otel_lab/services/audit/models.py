"""Tables owned by audit-service: ``audit_logs``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Identity, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from otel_lab.db import Base
from otel_lab.jsontypes import JSONObject


class AuditLog(Base):
    __tablename__ = "audit_logs"
    # Read server-made values (ids, timestamps) back with RETURNING: no lazy load later.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    order_id: Mapped[int | None] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[JSONObject] = mapped_column(JSONB, default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # A retried call with the same key writes one row, not two.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    # Which request the key was first used for (services/persistence.py): another request
    # with the key is a 422. None in rows older than migration 0003.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
