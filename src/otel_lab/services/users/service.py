"""The traced service layer: business rules over the repositories' statements.

Each operation is one span (``service.<operation>``, ``operation.type=business_logic``,
``api.operation``) above the repository spans. Domain outcomes that are the client's
doing (not found, conflict) are raised as the services' 404/409 errors
(``services.errors``); they are span events, not span errors, because the service did not
fail.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, TypeVar

from opentelemetry import trace
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab.services import errors
from otel_lab.services.users.repository import (
    TodoRepository,
    TodoRow,
    UserRepository,
    UserRow,
)
from otel_lab.services.users.schemas import TodoCreate, TodoUpdate, UserCreate, UserUpdate
from otel_lab.telemetry import Telemetry

SCOPE = "otel_lab.users.service"

P = ParamSpec("P")
R = TypeVar("R")


class NotFoundError(errors.NotFoundError):
    def __init__(self, kind: str, ident: int) -> None:
        super().__init__(f"{kind} {ident} not found")


ConflictError = errors.ConflictError
EMAIL_TAKEN = "a user with this email already exists"


def operation(
    name: str,
) -> Callable[
    [Callable[Concatenate[UserService, P], Awaitable[R]]],
    Callable[Concatenate[UserService, P], Awaitable[R]],
]:
    """Run a service method in its own span; domain errors become span events."""

    def decorate(
        fn: Callable[Concatenate[UserService, P], Awaitable[R]],
    ) -> Callable[Concatenate[UserService, P], Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(service: UserService, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with service.tracer.start_as_current_span(
                f"service.{name}",
                attributes={"operation.type": "business_logic", "api.operation": name},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await fn(service, *args, **kwargs)
                except errors.ServiceError as exc:
                    if exc.status_code >= 500:
                        errors.mark_failed(span, exc, exc.error_type)
                    else:
                        span.add_event(
                            "domain_error",
                            {"error.code": exc.error_type, "error.message": str(exc)},
                        )
                    raise
                except Exception as exc:
                    errors.mark_failed(span, exc, type(exc).__name__)
                    raise

        return wrapper

    return decorate


class UserService:
    """Users and their todos; one instance per request, over that request's connection
    (autocommit: each repository statement is its own transaction)."""

    def __init__(self, connection: AsyncConnection, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer(SCOPE)
        self.users = UserRepository(connection, telemetry)
        self.todos = TodoRepository(connection, telemetry)

    # -- users ------------------------------------------------------------------------------

    async def _user(self, user_id: int) -> UserRow:
        trace.get_current_span().set_attribute("user.id", user_id)
        user = await self.users.get(user_id)
        if user is None:
            raise NotFoundError("user", user_id)
        return user

    @operation("create_user")
    async def create_user(self, data: UserCreate) -> UserRow:
        if await self.users.get_by_email(data.email) is not None:
            raise ConflictError(EMAIL_TAKEN)
        user = await self.users.add(data.name, data.email, data.tier)
        if user is None:  # a concurrent request took the email meanwhile
            raise ConflictError(EMAIL_TAKEN)
        trace.get_current_span().set_attribute("user.id", user.id)
        return user

    @operation("get_user")
    async def get_user(self, user_id: int) -> UserRow:
        return await self._user(user_id)

    @operation("list_users")
    async def list_users(self, limit: int, offset: int) -> tuple[list[UserRow], int]:
        return await self.users.page(limit, offset)

    @operation("update_user")
    async def update_user(self, user_id: int, data: UserUpdate) -> UserRow:
        user = await self._user(user_id)
        changes = data.model_dump(exclude_unset=True)
        if "email" in changes and changes["email"] != user.email:
            other = await self.users.get_by_email(changes["email"])
            if other is not None and other.id != user.id:
                raise ConflictError(EMAIL_TAKEN)
        trace.get_current_span().set_attribute("user.changed_fields", sorted(changes))
        try:
            updated = await self.users.update(user_id, changes)
        except IntegrityError as exc:  # the email was taken meanwhile
            raise ConflictError(EMAIL_TAKEN) from exc
        if updated is None:  # deleted meanwhile
            raise NotFoundError("user", user_id)
        return updated

    @operation("delete_user")
    async def delete_user(self, user_id: int) -> None:
        trace.get_current_span().set_attribute("user.id", user_id)
        if not await self.users.delete(user_id):  # todos go with it (ON DELETE CASCADE)
            raise NotFoundError("user", user_id)

    # -- todos ------------------------------------------------------------------------------

    async def _todo(self, todo_id: int) -> TodoRow:
        trace.get_current_span().set_attribute("todo.id", todo_id)
        todo = await self.todos.get(todo_id)
        if todo is None:
            raise NotFoundError("todo", todo_id)
        return todo

    @operation("create_todo")
    async def create_todo(self, user_id: int, data: TodoCreate) -> TodoRow:
        trace.get_current_span().set_attribute("user.id", user_id)
        values = data.model_dump()
        values["completed_at"] = datetime.now(UTC) if data.completed else None
        try:
            todo = await self.todos.add(user_id, values)
        except IntegrityError as exc:  # the user was deleted between the check and the write
            raise NotFoundError("user", user_id) from exc
        if todo is None:
            raise NotFoundError("user", user_id)
        trace.get_current_span().set_attribute("todo.id", todo.id)
        return todo

    @operation("get_todo")
    async def get_todo(self, todo_id: int) -> TodoRow:
        return await self._todo(todo_id)

    @operation("list_todos")
    async def list_todos(
        self, *, user_id: int | None, completed: bool | None, limit: int, offset: int
    ) -> tuple[list[TodoRow], int]:
        if user_id is not None:
            await self._user(user_id)
        return await self.todos.page(
            user_id=user_id, completed=completed, limit=limit, offset=offset
        )

    @operation("update_todo")
    async def update_todo(self, todo_id: int, data: TodoUpdate) -> TodoRow:
        todo = await self._todo(todo_id)
        changes = data.model_dump(exclude_unset=True)
        if "completed" in changes and changes["completed"] != todo.completed:
            changes["completed_at"] = datetime.now(UTC) if changes["completed"] else None
        trace.get_current_span().set_attribute(
            "todo.changed_fields", sorted(changes.keys() - {"completed_at"})
        )
        return await self._updated(todo, changes)

    @operation("complete_todo")
    async def complete_todo(self, todo_id: int) -> TodoRow:
        todo = await self._todo(todo_id)
        if todo.completed:
            trace.get_current_span().add_event("todo.already_completed")
            return todo
        return await self._updated(todo, {"completed": True, "completed_at": datetime.now(UTC)})

    async def _updated(self, todo: TodoRow, changes: Mapping[str, object]) -> TodoRow:
        updated = await self.todos.update(todo, changes)
        if updated is None:  # deleted meanwhile
            raise NotFoundError("todo", todo.id)
        return updated

    @operation("delete_todo")
    async def delete_todo(self, todo_id: int) -> None:
        trace.get_current_span().set_attribute("todo.id", todo_id)
        if await self.todos.delete(todo_id) is None:
            raise NotFoundError("todo", todo_id)
