"""Tables owned by the api service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from otel_lab.db import Base


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    # pending until the worker's item_enrichment task has run
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    slug: Mapped[str | None] = mapped_column(String(220))
    word_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    enriched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @staticmethod
    def cache_key(item_id: int) -> str:
        return f"item:{item_id}"
