"""Tables owned by user-service: ``users`` (the chain's and the CRUD's, one table) and ``todos``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from otel_lab.db import Base

# Ids 1001-1010 are the seeded demo users of the service chain (migration 0002); created users
# are numbered from here on, so the two never collide.
FIRST_CREATED_USER_ID = 1011
DEFAULT_TIER = "standard"


class User(Base):
    __tablename__ = "users"
    # Read server-made values (ids, timestamps) back with RETURNING: no lazy load later.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(
        Integer, Identity(start=FIRST_CREATED_USER_ID), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Profile data the chain's enrichment step reads and the pricing step uses.
    tier: Mapped[str] = mapped_column(String(20), default=DEFAULT_TIER, server_default=DEFAULT_TIER)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Todo(Base):
    __tablename__ = "todos"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    completed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
