"""The traced repository layer: every data access is one span with the showcase's
attributes (``operation.type``, ``database.system``, ``database.name``, ``user.id``,
``todo.id``), and the SQL statements beneath it are the driver spans.

Every access is SQLAlchemy Core on one autocommit connection per request: each statement is
its own transaction, so there is no ORM unit of work and no BEGIN/COMMIT round trip, and
the statements are built once (a fraction of the CPU of ORM flushes; docs/performance.md).
What must happen together is one statement (``INSERT ... RETURNING``, ``INSERT ... SELECT``
that writes a todo only if its user exists, ``DELETE ... RETURNING``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import TypeAlias, cast

from opentelemetry import trace
from sqlalchemy import (
    Executable,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab import db, faults
from otel_lab.services.users.models import DEFAULT_TIER, Todo, User
from otel_lab.telemetry import Telemetry

SCOPE = "otel_lab.users.repository"

# A whole row of each table, in column order: what every statement below returns (but
# ``_DELETE_*``). Its statements select the Table's columns, which SQLAlchemy cannot type.
# Rows of ``db.execute`` (named tuples): users (id, name, email, tier, created_at, updated_at),
# todos (id, user_id, title, description, completed, created_at, updated_at, completed_at).
UserRow: TypeAlias = db.Row
TodoColumns: TypeAlias = tuple[int, int, str, str | None, bool, datetime, datetime, datetime | None]
TodoRow: TypeAlias = db.Row


# Declarative tables are typed FromClause; the statements below want the Table they are.
_users = cast(Table, User.__table__)
_todos = cast(Table, Todo.__table__)

# Built once: a statement object keeps its cache key, so executing it skips even that walk.
_GET_USER = select(_users).where(_users.c.id == bindparam("user_id"))
_GET_USER_BY_EMAIL = select(_users).where(_users.c.email == bindparam("email"))
_COUNT_USERS = select(func.count()).select_from(_users)
_PAGE_USERS = (
    select(_users).order_by(_users.c.id).limit(bindparam("limit")).offset(bindparam("offset"))
)
_COUNT_TODOS_OF = select(func.count()).where(_todos.c.user_id == bindparam("user_id"))
_COUNT_TODOS = select(func.count(), func.count().filter(_todos.c.completed.is_(False))).where(
    _todos.c.user_id == bindparam("user_id")
)
_DELETE_USER = delete(_users).where(_users.c.id == bindparam("user_id")).returning(_users.c.id)
# Text: SQLAlchemy 2.0 does not cache its PostgreSQL insert().on_conflict_* constructs.
_INSERT_USER = text(
    """
    INSERT INTO users (name, email, tier) VALUES (:name, :email, :tier)
    ON CONFLICT (email) DO NOTHING
    RETURNING id, name, email, tier, created_at, updated_at
    """
).columns(*_users.c)
# The todo is written only if its user exists: no row back means no such user.
_INSERT_TODO = (
    insert(_todos)
    .from_select(
        ["user_id", "title", "description", "completed", "completed_at"],
        select(
            _users.c.id,
            bindparam("title", type_=_todos.c.title.type),
            bindparam("description", type_=_todos.c.description.type),
            bindparam("completed", type_=_todos.c.completed.type),
            bindparam("completed_at", type_=_todos.c.completed_at.type),
        ).where(_users.c.id == bindparam("user_id")),
    )
    .returning(*_todos.c)
)
_GET_TODO = select(_todos).where(_todos.c.id == bindparam("todo_id"))
_DELETE_TODO = (
    delete(_todos)
    .where(_todos.c.id == bindparam("todo_id"))
    .returning(_todos.c.id, _todos.c.user_id)
)


@lru_cache
def _todo_queries(
    by_user: bool, by_completed: bool
) -> tuple[Select[tuple[int]], Select[TodoColumns]]:
    """(count, page) of the todos, filtered by user and/or completion: four pairs, each
    built once."""
    count, page = select(func.count()).select_from(_todos), select(_todos)
    for apply, condition in (
        (by_user, _todos.c.user_id == bindparam("user_id")),
        (by_completed, _todos.c.completed == bindparam("completed")),
    ):
        if apply:
            count, page = count.where(condition), page.where(condition)
    page = page.order_by(_todos.c.id).limit(bindparam("limit")).offset(bindparam("offset"))
    return count, page


class _Repository:
    """One request's autocommit connection, and the span every data access is."""

    def __init__(self, connection: AsyncConnection, telemetry: Telemetry) -> None:
        self.connection = connection
        self.tracer = telemetry.tracer(SCOPE)
        self.database = connection.engine.url.database or ""

    @contextmanager
    def _span(self, operation: str, **attributes: str | int | bool) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(
            f"repository.{operation}",
            attributes={
                "operation.type": "database",
                "database.system": "postgresql",
                "database.name": self.database,
                "database.operation": operation,
                **attributes,
            },
        ) as span:
            yield span


class UserRepository(_Repository):
    """Users as SQLAlchemy Core statements on one autocommit connection (each statement
    its own transaction, no BEGIN/COMMIT round trips); rows, not ORM objects."""

    async def _one(self, statement: Executable, params: Mapping[str, object]) -> UserRow | None:
        """The user row ``statement`` (built once) returns (each one given here returns whole
        rows), run on the driver (``db.execute``)."""
        return (await db.execute(self.connection, statement, params)).first()

    async def get(self, user_id: int) -> UserRow | None:
        with self._span("get_user", **{"user.id": user_id}) as span:
            user = await self._one(_GET_USER, {"user_id": user_id})
            span.set_attribute("db.found", user is not None)
            return user

    async def get_by_email(self, email: str) -> UserRow | None:
        with self._span("get_user_by_email") as span:  # the email itself stays out of the span
            user = await self._one(_GET_USER_BY_EMAIL, {"email": email})
            span.set_attribute("db.found", user is not None)
            if user is not None:
                span.set_attribute("user.id", user.id)
            return user

    async def page(self, limit: int, offset: int) -> tuple[list[UserRow], int]:
        with self._span("list_users", **{"db.limit": limit, "db.offset": offset}) as span:
            total = await self.connection.scalar(_COUNT_USERS)
            result = await self.connection.execute(_PAGE_USERS, {"limit": limit, "offset": offset})
            users = list(result.all())
            span.set_attribute("db.rows", len(users))
            if faults.active("n-plus-one"):  # one more query per listed user, as lazy loads do
                faults.mark(span, "n-plus-one")
                for user in users:
                    await self.connection.scalar(_COUNT_TODOS_OF, {"user_id": user.id})
            return users, int(total or 0)

    async def add(self, name: str, email: str, tier: str = DEFAULT_TIER) -> UserRow | None:
        """Insert a user; None when the email is taken (checked first, or a concurrent
        request created it meanwhile)."""
        with self._span("insert_user") as span:
            user = await self._one(_INSERT_USER, {"name": name, "email": email, "tier": tier})
            if user is not None:
                span.set_attribute("user.id", user.id)
            return user

    async def update(self, user_id: int, changes: Mapping[str, object]) -> UserRow | None:
        """Set ``changes`` (and ``updated_at``); None when the user is gone. A taken email
        raises IntegrityError."""
        with self._span("update_user", **{"user.id": user_id}):
            statement = (
                update(_users).where(_users.c.id == user_id).values(**changes).returning(*_users.c)
            )
            return (await self.connection.execute(statement)).first()

    async def delete(self, user_id: int) -> bool:
        """Delete the user (their todos go with it: ON DELETE CASCADE); False if unknown."""
        with self._span("delete_user", **{"user.id": user_id}) as span:
            deleted = await db.execute(self.connection, _DELETE_USER, {"user_id": user_id})
            found = deleted.first() is not None
            span.set_attribute("db.found", found)
            return found

    async def todo_counts(self, user_id: int) -> tuple[int, int]:
        """(all todos, open todos) of a user: the profile enrichment reads these."""
        with self._span("count_todos", **{"user.id": user_id}):
            result = await db.execute(self.connection, _COUNT_TODOS, {"user_id": user_id})
            total, open_todos = result.one()
            return int(total), int(open_todos)


class TodoRepository(_Repository):
    """Todos as Core statements on one autocommit connection, like :class:`UserRepository`."""

    async def get(self, todo_id: int) -> TodoRow | None:
        with self._span("get_todo", **{"todo.id": todo_id}) as span:
            todo = (await db.execute(self.connection, _GET_TODO, {"todo_id": todo_id})).first()
            span.set_attribute("db.found", todo is not None)
            if todo is not None:
                span.set_attribute("user.id", todo.user_id)
            return todo

    async def page(
        self, *, user_id: int | None, completed: bool | None, limit: int, offset: int
    ) -> tuple[list[TodoRow], int]:
        attributes: dict[str, int | bool] = {"db.limit": limit, "db.offset": offset}
        params: dict[str, int | bool] = {"limit": limit, "offset": offset}
        if user_id is not None:
            attributes["user.id"] = params["user_id"] = user_id
        if completed is not None:
            attributes["todo.completed"] = params["completed"] = completed
        count, page = _todo_queries(user_id is not None, completed is not None)
        with self._span("list_todos", **attributes) as span:
            total = (await db.execute(self.connection, count, params)).scalar()
            todos = list(await db.execute(self.connection, page, params))
            span.set_attribute("db.rows", len(todos))
            return todos, int(total or 0)

    async def add(self, user_id: int, values: Mapping[str, object]) -> TodoRow | None:
        """Insert a todo for ``user_id``; None when there is no such user."""
        with self._span("insert_todo", **{"user.id": user_id}) as span:
            result = await db.execute(self.connection, _INSERT_TODO, {"user_id": user_id, **values})
            todo = result.first()
            if todo is not None:
                span.set_attribute("todo.id", todo.id)
            return todo

    async def update(self, todo: TodoRow, changes: Mapping[str, object]) -> TodoRow | None:
        """Set ``changes`` (and ``updated_at``) on the todo; None when it is gone."""
        with self._span("update_todo", **{"todo.id": todo.id, "user.id": todo.user_id}):
            statement = (
                update(_todos).where(_todos.c.id == todo.id).values(**changes).returning(*_todos.c)
            )
            return (await self.connection.execute(statement)).first()

    async def delete(self, todo_id: int) -> db.Row | None:
        """Delete the todo; its row (id, user_id), or None when there was none."""
        with self._span("delete_todo", **{"todo.id": todo_id}) as span:
            deleted = (
                await db.execute(self.connection, _DELETE_TODO, {"todo_id": todo_id})
            ).first()
            span.set_attribute("db.found", deleted is not None)
            if deleted is not None:
                span.set_attribute("user.id", deleted.user_id)
            return deleted
