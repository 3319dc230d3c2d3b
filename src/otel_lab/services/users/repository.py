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
from typing import NamedTuple, cast

from opentelemetry import trace
from sqlalchemy import (
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


class UserRow(NamedTuple):
    """A whole ``users`` row, in column order (``db.Statement`` checks it at the first run):
    what the statements below return, typed (SQLAlchemy cannot type a Table's columns)."""

    id: int
    name: str
    email: str
    tier: str
    created_at: datetime
    updated_at: datetime


class TodoRow(NamedTuple):
    """A whole ``todos`` row, in column order, as :class:`UserRow`."""

    id: int
    user_id: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


# The other statements' rows.
class TodoCounts(NamedTuple):
    total: int
    open: int


class DeletedUser(NamedTuple):
    id: int


class DeletedTodo(NamedTuple):
    id: int
    user_id: int


# Declarative tables are typed FromClause; the statements below want the Table they are.
_users = cast(Table, User.__table__)
_todos = cast(Table, Todo.__table__)

# Built once: a statement object keeps its cache key, so executing it skips even that walk.
_GET_USER = db.Statement(select(_users).where(_users.c.id == bindparam("user_id")), UserRow)
_GET_USER_BY_EMAIL = db.Statement(
    select(_users).where(_users.c.email == bindparam("email")), UserRow
)
_COUNT_USERS = select(func.count()).select_from(_users)
_PAGE_USERS = db.Statement(
    select(_users).order_by(_users.c.id).limit(bindparam("limit")).offset(bindparam("offset")),
    UserRow,
)
_COUNT_TODOS_OF = select(func.count()).where(_todos.c.user_id == bindparam("user_id"))
_COUNT_TODOS = db.Statement(
    select(
        func.count().label("total"),
        func.count().filter(_todos.c.completed.is_(False)).label("open"),
    ).where(_todos.c.user_id == bindparam("user_id")),
    TodoCounts,
)
_DELETE_USER = db.Statement(
    delete(_users).where(_users.c.id == bindparam("user_id")).returning(_users.c.id), DeletedUser
)
# Text: SQLAlchemy 2.0 does not cache its PostgreSQL insert().on_conflict_* constructs.
_INSERT_USER = db.Statement(
    text(
        """
        INSERT INTO users (name, email, tier) VALUES (:name, :email, :tier)
        ON CONFLICT (email) DO NOTHING
        RETURNING id, name, email, tier, created_at, updated_at
        """
    ).columns(*_users.c),
    UserRow,
)
# The todo is written only if its user exists: no row back means no such user.
_INSERT_TODO = db.Statement(
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
    .returning(*_todos.c),
    TodoRow,
)
_GET_TODO = db.Statement(select(_todos).where(_todos.c.id == bindparam("todo_id")), TodoRow)
_DELETE_TODO = db.Statement(
    delete(_todos)
    .where(_todos.c.id == bindparam("todo_id"))
    .returning(_todos.c.id, _todos.c.user_id),
    DeletedTodo,
)


@lru_cache
def _todo_queries(
    by_user: bool, by_completed: bool
) -> tuple[db.Statement[db.Count], db.Statement[TodoRow]]:
    """(count, page) of the todos, filtered by user and/or completion: four pairs, each
    built once."""
    count, page = select(func.count().label("total")).select_from(_todos), select(_todos)
    for apply, condition in (
        (by_user, _todos.c.user_id == bindparam("user_id")),
        (by_completed, _todos.c.completed == bindparam("completed")),
    ):
        if apply:
            count, page = count.where(condition), page.where(condition)
    page = page.order_by(_todos.c.id).limit(bindparam("limit")).offset(bindparam("offset"))
    return db.Statement(count, db.Count), db.Statement(page, TodoRow)


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

    async def _one(
        self, statement: db.Statement[UserRow], params: Mapping[str, object]
    ) -> UserRow | None:
        """The user row ``statement`` (built once) returns, run on the driver (``db.execute``)."""
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
            users = await db.execute(
                self.connection, _PAGE_USERS, {"limit": limit, "offset": offset}
            )
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
            )  # built per call (its columns vary): SQLAlchemy's execution, not db.execute
            row = (await self.connection.execute(statement)).first()
            return None if row is None else UserRow._make(row)

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
            counts = (await db.execute(self.connection, _COUNT_TODOS, {"user_id": user_id})).one()
            return counts.total, counts.open


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
            total = (await db.execute(self.connection, count, params)).one().total
            todos = await db.execute(self.connection, page, params)
            span.set_attribute("db.rows", len(todos))
            return todos, total

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
            )  # built per call (its columns vary): SQLAlchemy's execution, not db.execute
            row = (await self.connection.execute(statement)).first()
            return None if row is None else TodoRow._make(row)

    async def delete(self, todo_id: int) -> DeletedTodo | None:
        """Delete the todo; its row (id, user_id), or None when there was none."""
        with self._span("delete_todo", **{"todo.id": todo_id}) as span:
            deleted = (
                await db.execute(self.connection, _DELETE_TODO, {"todo_id": todo_id})
            ).first()
            span.set_attribute("db.found", deleted is not None)
            if deleted is not None:
                span.set_attribute("user.id", deleted.user_id)
            return deleted
