"""Request and response bodies of the api service."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


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
