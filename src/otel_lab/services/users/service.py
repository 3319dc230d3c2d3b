"""The traced service layer: business rules and the unit of work.

Each operation is one span (``service.<operation>``, ``operation.type=business_logic``,
``api.operation``) above the repository spans. Domain outcomes that are the client's
doing (not found, conflict) are raised as the services' 404/409 errors
(``services.errors``); they are span events, not span errors, because the service did not
fail.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, TypeVar

from opentelemetry import trace
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from otel_lab.services import errors
from otel_lab.services.users.models import Todo, User
from otel_lab.services.users.repository import TodoRepository, UserRepository
from otel_lab.services.users.schemas import TodoCreate, TodoUpdate, UserCreate, UserUpdate
from otel_lab.telemetry import Telemetry

SCOPE = "otel_lab.users.service"

P = ParamSpec("P")
R = TypeVar("R")


class NotFoundError(errors.NotFoundError):
    def __init__(self, kind: str, ident: int) -> None:
        super().__init__(f"{kind} {ident} not found")


ConflictError = errors.ConflictError


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
    """Users and their todos; one instance per request, over that request's session."""

    def __init__(self, session: AsyncSession, telemetry: Telemetry) -> None:
        self.session = session
        self.tracer = telemetry.tracer(SCOPE)
        self.users = UserRepository(session, telemetry)
        self.todos = TodoRepository(session, telemetry)

    # -- users ------------------------------------------------------------------------------

    async def _user(self, user_id: int) -> User:
        trace.get_current_span().set_attribute("user.id", user_id)
        user = await self.users.get(user_id)
        if user is None:
            raise NotFoundError("user", user_id)
        return user

    async def _commit(self, conflict: str) -> None:
        """Commit; a unique violation that slipped past the check (a race) is a 409."""
        try:
            await self.session.commit()
        except IntegrityError as exc:
            await self.session.rollback()
            raise ConflictError(conflict) from exc

    @operation("create_user")
    async def create_user(self, data: UserCreate) -> User:
        if await self.users.get_by_email(data.email) is not None:
            raise ConflictError("a user with this email already exists")
        user = await self.users.add(User(name=data.name, email=data.email, tier=data.tier))
        await self._commit("a user with this email already exists")
        trace.get_current_span().set_attribute("user.id", user.id)
        return user

    @operation("get_user")
    async def get_user(self, user_id: int) -> User:
        return await self._user(user_id)

    @operation("list_users")
    async def list_users(self, limit: int, offset: int) -> tuple[list[User], int]:
        return await self.users.page(limit, offset)

    @operation("update_user")
    async def update_user(self, user_id: int, data: UserUpdate) -> User:
        user = await self._user(user_id)
        changes = data.model_dump(exclude_unset=True)
        if "email" in changes and changes["email"] != user.email:
            other = await self.users.get_by_email(changes["email"])
            if other is not None and other.id != user.id:
                raise ConflictError("a user with this email already exists")
        for field, value in changes.items():
            setattr(user, field, value)
        trace.get_current_span().set_attribute("user.changed_fields", sorted(changes))
        await self.users.flush(user)
        await self._commit("a user with this email already exists")
        return user

    @operation("delete_user")
    async def delete_user(self, user_id: int) -> None:
        user = await self._user(user_id)
        await self.users.delete(user)  # todos go with it (ON DELETE CASCADE)
        await self.session.commit()

    # -- todos ------------------------------------------------------------------------------

    async def _todo(self, todo_id: int) -> Todo:
        trace.get_current_span().set_attribute("todo.id", todo_id)
        todo = await self.todos.get(todo_id)
        if todo is None:
            raise NotFoundError("todo", todo_id)
        return todo

    @operation("create_todo")
    async def create_todo(self, user_id: int, data: TodoCreate) -> Todo:
        await self._user(user_id)
        todo = Todo(user_id=user_id, **data.model_dump())
        if todo.completed:
            todo.completed_at = datetime.now(UTC)
        await self.todos.add(todo)
        try:
            await self.session.commit()
        except IntegrityError as exc:  # the user was deleted meanwhile
            await self.session.rollback()
            raise NotFoundError("user", user_id) from exc
        trace.get_current_span().set_attribute("todo.id", todo.id)
        return todo

    @operation("get_todo")
    async def get_todo(self, todo_id: int) -> Todo:
        return await self._todo(todo_id)

    @operation("list_todos")
    async def list_todos(
        self, *, user_id: int | None, completed: bool | None, limit: int, offset: int
    ) -> tuple[list[Todo], int]:
        if user_id is not None:
            await self._user(user_id)
        return await self.todos.page(
            user_id=user_id, completed=completed, limit=limit, offset=offset
        )

    @operation("update_todo")
    async def update_todo(self, todo_id: int, data: TodoUpdate) -> Todo:
        todo = await self._todo(todo_id)
        changes = data.model_dump(exclude_unset=True)
        if "completed" in changes and changes["completed"] != todo.completed:
            todo.completed_at = datetime.now(UTC) if changes["completed"] else None
        for field, value in changes.items():
            setattr(todo, field, value)
        trace.get_current_span().set_attribute("todo.changed_fields", sorted(changes))
        await self.todos.flush(todo)
        await self.session.commit()
        return todo

    @operation("complete_todo")
    async def complete_todo(self, todo_id: int) -> Todo:
        todo = await self._todo(todo_id)
        if not todo.completed:
            todo.completed = True
            todo.completed_at = datetime.now(UTC)
            await self.todos.flush(todo)
            await self.session.commit()
        else:
            trace.get_current_span().add_event("todo.already_completed")
        return todo

    @operation("delete_todo")
    async def delete_todo(self, todo_id: int) -> None:
        todo = await self._todo(todo_id)
        await self.todos.delete(todo)
        await self.session.commit()
