"""The item domain: the ``items`` table, its request and response bodies, the enrichment
task's name and what enrichment derives.

The api service writes items and serves cached reads; the worker enriches them. Both import
this module, and neither imports the other.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, Integer, String, Table, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from otel_lab.db import Base

# The Celery task that enriches an item; publishers send it by name (otel_lab.queue).
ITEM_ENRICHMENT = "item_enrichment"


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


# The table, for Core statements (the api's repository, the worker).
items = cast(Table, Item.__table__)


class ItemRow(NamedTuple):
    """A whole ``items`` row, in column order: the rows of ``db.Statement``s that select or
    return ``*items.c``."""

    id: int
    name: str
    description: str | None
    status: str
    slug: str | None
    word_count: int | None
    created_at: datetime
    enriched_at: datetime | None


def enrichment(name: str, description: str | None) -> dict[str, object]:
    """What the worker sets on an item: its slug and word count, and that it is enriched."""
    return {
        "slug": slugify(name),
        "word_count": len(f"{name} {description or ''}".split()),
        "status": "enriched",
        "enriched_at": datetime.now(UTC),
    }


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:220]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200, examples=["Widget"])
    description: str | None = Field(None, max_length=2000, examples=["A very useful widget"])


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    status: str
    slug: str | None
    word_count: int | None
    created_at: datetime
    enriched_at: datetime | None
