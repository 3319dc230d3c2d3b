"""Request and response bodies of user-service.

Every limit here matches a column, so bad input is a 422 from validation and never a
database error (which the shared handler would report as a 503).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from otel_lab.services.params import RowId


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here instead of failing in the driver.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _lower(value: str) -> str:
    return value.lower()


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Email = Annotated[EmailStr, Field(max_length=320), AfterValidator(_no_nul), AfterValidator(_lower)]
Tier = Literal["standard", "premium", "gold"]
Title = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)]
# Actions travel in baggage and span attributes: a short token, nothing more.
Action = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserCreate(BaseModel):
    model_config = _STRICT

    name: Name = Field(examples=["Ada Lovelace"])
    email: Email = Field(examples=["ada@example.com"])
    tier: Tier = "standard"


class UserUpdate(BaseModel):
    """Fields to change; at least one."""

    model_config = _STRICT

    name: Name | None = None
    email: Email | None = None
    tier: Tier | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UserUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of name, email, tier")
        for field in self.model_fields_set:
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    tier: str
    created_at: datetime
    updated_at: datetime


class TodoCreate(BaseModel):
    model_config = _STRICT

    title: Title = Field(examples=["Write the runbook"])
    description: Description | None = None
    completed: bool = False


class TodoUpdate(BaseModel):
    """Fields to change; at least one."""

    model_config = _STRICT

    title: Title | None = None
    description: Description | None = None
    completed: bool | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> TodoUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of title, description, completed")
        if "title" in self.model_fields_set and self.title is None:
            raise ValueError("title cannot be null")
        if "completed" in self.model_fields_set and self.completed is None:
            raise ValueError("completed cannot be null")
        return self


class TodoOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class ProcessRequest(BaseModel):
    """The service chain's request: a user id, or a name and email, and an action."""

    model_config = _STRICT

    user_id: RowId | None = Field(None, examples=[1001])
    user_name: Name | None = Field(None, examples=["John Doe"])
    user_email: Email | None = Field(None, examples=["john@example.com"])
    action: Action = Field(examples=["test_trace"])
    # Demos and tests: make a step fail ("order", "audit") or fail once ("order_transient").
    simulate_failure: Literal["order", "order_transient", "audit"] | None = None

    @model_validator(mode="after")
    def _who(self) -> ProcessRequest:
        if self.user_id is None and self.user_email is None:
            raise ValueError("give user_id, or user_email (and user_name) to identify the user")
        return self


class ChainProfile(BaseModel):
    """The user as the chain's first step found them, with what enrichment added."""

    id: int
    name: str
    email: str
    tier: str
    todo_count: int
    open_todo_count: int
    member_since: str  # ISO 8601, as datetime.isoformat() writes it


class ChainResponse(BaseModel):
    """The chain's answer: the trace to look at and what each step did."""

    trace_id: str
    status: Literal["completed"]
    user: ChainProfile
    # order-service's answer as it gave it: the order, and the audit (recorded or deferred).
    order: dict[str, Any]
    audit: dict[str, Any]
    chain: list[str]
    idempotency_key: str
    duration_ms: float
