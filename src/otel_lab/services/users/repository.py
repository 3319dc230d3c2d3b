"""The traced repository layer: every data access is one span with the showcase's
attributes (``operation.type``, ``database.system``, ``database.name``, ``user.id``,
``todo.id``), and the SQL statements beneath it are the driver spans.

Repositories never commit: the service layer owns the unit of work. The chain's reads
(:class:`ProfileReader`) are SQLAlchemy Core statements on one autocommit connection: no
ORM unit of work, no BEGIN/COMMIT, a fraction of the CPU per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar, cast

from opentelemetry import trace
from sqlalchemy import Row, Select, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otel_lab import faults
from otel_lab.services.persistence import paged
from otel_lab.services.users.models import Todo, User
from otel_lab.settings import get_settings
from otel_lab.telemetry import Telemetry

SCOPE = "otel_lab.users.repository"


@lru_cache
def database_name() -> str:
    url = get_settings().database_url
    return (make_url(url).database or "") if url else ""


@contextmanager
def _span(
    tracer: trace.Tracer, operation: str, **attributes: str | int | bool
) -> Iterator[trace.Span]:
    with tracer.start_as_current_span(
        f"repository.{operation}",
        attributes={
            "operation.type": "database",
            "database.system": "postgresql",
            "database.name": database_name(),
            "database.operation": operation,
            **attributes,
        },
    ) as span:
        yield span


T = TypeVar("T")


async def _page(
    session: AsyncSession, query: Select[tuple[T]], limit: int, offset: int
) -> tuple[list[T], int]:
    page, total = await paged(session, query, limit, offset)
    return list((await session.scalars(page)).all()), total


class UserRepository:
    def __init__(self, session: AsyncSession, telemetry: Telemetry) -> None:
        self.session = session
        self.tracer = telemetry.tracer(SCOPE)

    async def get(self, user_id: int) -> User | None:
        with _span(self.tracer, "get_user", **{"user.id": user_id}) as span:
            user = await self.session.get(User, user_id)
            span.set_attribute("db.found", user is not None)
            return user

    async def get_by_email(self, email: str) -> User | None:
        # The email itself is personal data: it stays out of the span.
        with _span(self.tracer, "get_user_by_email") as span:
            user = await self.session.scalar(select(User).where(User.email == email))
            span.set_attribute("db.found", user is not None)
            if user is not None:
                span.set_attribute("user.id", user.id)
            return user

    async def page(self, limit: int, offset: int) -> tuple[list[User], int]:
        with _span(self.tracer, "list_users", **{"db.limit": limit, "db.offset": offset}) as span:
            users, total = await _page(self.session, select(User).order_by(User.id), limit, offset)
            span.set_attribute("db.rows", len(users))
            if faults.active("n-plus-one"):  # one more query per listed user, as lazy loads do
                faults.mark(span, "n-plus-one")
                for user in users:
                    await self.session.scalar(select(func.count()).where(Todo.user_id == user.id))
            return users, total

    async def add(self, user: User) -> User:
        with _span(self.tracer, "insert_user") as span:
            self.session.add(user)
            await self.session.flush()
            span.set_attribute("user.id", user.id)
            return user

    async def flush(self, user: User) -> None:
        with _span(self.tracer, "update_user", **{"user.id": user.id}):
            await self.session.flush()

    async def delete(self, user: User) -> None:
        with _span(self.tracer, "delete_user", **{"user.id": user.id}):
            await self.session.delete(user)
            await self.session.flush()


# Declarative tables are typed FromClause; insert() wants the Table they are.
_users = cast(Table, User.__table__)
_todos = Todo.__table__
# Built once: a statement object keeps its cache key, so executing it skips even that.
_GET_USER = select(_users).where(_users.c.id == bindparam("user_id"))
_GET_USER_BY_EMAIL = select(_users).where(_users.c.email == bindparam("email"))
_COUNT_TODOS = select(func.count(), func.count().filter(_todos.c.completed.is_(False))).where(
    _todos.c.user_id == bindparam("user_id")
)


class ProfileReader:
    """The chain's user steps as Core statements on one connection (autocommit: each
    statement is its own transaction). Rows, not ORM objects: the chain only reads them."""

    def __init__(self, connection: AsyncConnection, telemetry: Telemetry) -> None:
        self.connection = connection
        self.tracer = telemetry.tracer(SCOPE)

    async def get(self, user_id: int) -> Row[Any] | None:
        with _span(self.tracer, "get_user", **{"user.id": user_id}) as span:
            result = await self.connection.execute(_GET_USER, {"user_id": user_id})
            user = result.first()
            span.set_attribute("db.found", user is not None)
            return user

    async def get_by_email(self, email: str) -> Row[Any] | None:
        # The email itself stays out of the span.
        with _span(self.tracer, "get_user_by_email") as span:
            result = await self.connection.execute(_GET_USER_BY_EMAIL, {"email": email})
            user = result.first()
            span.set_attribute("db.found", user is not None)
            if user is not None:
                span.set_attribute("user.id", user.id)
            return user

    async def add(self, name: str, email: str) -> Row[Any] | None:
        """Insert a user; None when the email exists (a concurrent request created it)."""
        with _span(self.tracer, "insert_user") as span:
            result = await self.connection.execute(
                insert(_users)
                .values(name=name, email=email)
                .on_conflict_do_nothing(index_elements=[_users.c.email])
                .returning(*_users.c)
            )
            user = result.first()
            if user is not None:
                span.set_attribute("user.id", user.id)
            return user

    async def todo_counts(self, user_id: int) -> tuple[int, int]:
        """(all todos, open todos) of a user: the profile enrichment reads these."""
        with _span(self.tracer, "count_todos", **{"user.id": user_id}):
            result = await self.connection.execute(_COUNT_TODOS, {"user_id": user_id})
            total, open_todos = result.one()
            return int(total), int(open_todos)


class TodoRepository:
    def __init__(self, session: AsyncSession, telemetry: Telemetry) -> None:
        self.session = session
        self.tracer = telemetry.tracer(SCOPE)

    async def get(self, todo_id: int) -> Todo | None:
        with _span(self.tracer, "get_todo", **{"todo.id": todo_id}) as span:
            todo = await self.session.get(Todo, todo_id)
            span.set_attribute("db.found", todo is not None)
            if todo is not None:
                span.set_attribute("user.id", todo.user_id)
            return todo

    async def page(
        self, *, user_id: int | None, completed: bool | None, limit: int, offset: int
    ) -> tuple[list[Todo], int]:
        attributes: dict[str, int | bool] = {"db.limit": limit, "db.offset": offset}
        query = select(Todo).order_by(Todo.id)
        if user_id is not None:
            attributes["user.id"] = user_id
            query = query.where(Todo.user_id == user_id)
        if completed is not None:
            attributes["todo.completed"] = completed
            query = query.where(Todo.completed.is_(completed))
        with _span(self.tracer, "list_todos", **attributes) as span:
            todos, total = await _page(self.session, query, limit, offset)
            span.set_attribute("db.rows", len(todos))
            return todos, total

    async def add(self, todo: Todo) -> Todo:
        with _span(self.tracer, "insert_todo", **{"user.id": todo.user_id}) as span:
            self.session.add(todo)
            await self.session.flush()
            span.set_attribute("todo.id", todo.id)
            return todo

    async def flush(self, todo: Todo) -> None:
        with _span(self.tracer, "update_todo", **{"todo.id": todo.id, "user.id": todo.user_id}):
            await self.session.flush()

    async def delete(self, todo: Todo) -> None:
        with _span(self.tracer, "delete_todo", **{"todo.id": todo.id, "user.id": todo.user_id}):
            await self.session.delete(todo)
            await self.session.flush()
