"""Users and todos over HTTP: validation, 404s, 409s and paginated lists.

Lists answer a JSON array (the original shape) for ``limit``/``offset`` and give the total
in the ``X-Total-Count`` header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from otel_lab.services.deps import AutocommitDep, TelemetryDep
from otel_lab.services.params import Limit, Offset, path_id, set_total
from otel_lab.services.users.schemas import (
    TodoCreate,
    TodoOut,
    TodoUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from otel_lab.services.users.service import UserService

users_router = APIRouter(prefix="/users", tags=["users"])
todos_router = APIRouter(prefix="/todos", tags=["todos"])

UserId = Annotated[int, path_id("The user's id")]
TodoId = Annotated[int, path_id("The todo's id")]
Completed = Annotated[bool | None, Query(description="Only completed (true) or open (false)")]


async def _service(
    autocommit: AutocommitDep, telemetry: TelemetryDep
) -> AsyncIterator[UserService]:
    async with autocommit.connect() as connection:
        yield UserService(connection, telemetry)


Service = Annotated[UserService, Depends(_service)]


EMAIL_TAKEN: dict[int | str, dict[str, Any]] = {409: {"description": "The email is taken"}}


@users_router.post("", status_code=201, responses=EMAIL_TAKEN)
async def create_user(body: UserCreate, service: Service) -> UserOut:
    """Create a user; 409 when the email is taken."""
    return UserOut.model_validate(await service.create_user(body))


@users_router.get("")
async def list_users(
    service: Service, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[UserOut]:
    users, total = await service.list_users(limit, offset)
    set_total(response, total)
    return [UserOut.model_validate(user) for user in users]


@users_router.get("/{user_id}")
async def get_user(user_id: UserId, service: Service) -> UserOut:
    return UserOut.model_validate(await service.get_user(user_id))


@users_router.put("/{user_id}", responses=EMAIL_TAKEN)
async def update_user(user_id: UserId, body: UserUpdate, service: Service) -> UserOut:
    """Change the given fields; 409 when the new email is taken."""
    return UserOut.model_validate(await service.update_user(user_id, body))


@users_router.delete("/{user_id}", status_code=204)
async def delete_user(user_id: UserId, service: Service) -> Response:
    """Delete the user and their todos."""
    await service.delete_user(user_id)
    return Response(status_code=204)


@users_router.post("/{user_id}/todos", status_code=201)
async def create_todo(user_id: UserId, body: TodoCreate, service: Service) -> TodoOut:
    return TodoOut.model_validate(await service.create_todo(user_id, body))


@users_router.get("/{user_id}/todos")
async def list_user_todos(
    user_id: UserId,
    service: Service,
    response: Response,
    completed: Completed = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[TodoOut]:
    return await _todos(service, response, user_id, completed, limit, offset)


@todos_router.get("")
async def list_todos(
    service: Service,
    response: Response,
    completed: Completed = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[TodoOut]:
    return await _todos(service, response, None, completed, limit, offset)


async def _todos(
    service: UserService,
    response: Response,
    user_id: int | None,
    completed: bool | None,
    limit: int,
    offset: int,
) -> list[TodoOut]:
    todos, total = await service.list_todos(
        user_id=user_id, completed=completed, limit=limit, offset=offset
    )
    set_total(response, total)
    return [TodoOut.model_validate(todo) for todo in todos]


@todos_router.get("/{todo_id}")
async def get_todo(todo_id: TodoId, service: Service) -> TodoOut:
    return TodoOut.model_validate(await service.get_todo(todo_id))


@todos_router.put("/{todo_id}")
async def update_todo(todo_id: TodoId, body: TodoUpdate, service: Service) -> TodoOut:
    return TodoOut.model_validate(await service.update_todo(todo_id, body))


@todos_router.put("/{todo_id}/complete")
async def complete_todo(todo_id: TodoId, service: Service) -> TodoOut:
    """Mark done (idempotent: completing a completed todo changes nothing)."""
    return TodoOut.model_validate(await service.complete_todo(todo_id))


@todos_router.delete("/{todo_id}", status_code=204)
async def delete_todo(todo_id: TodoId, service: Service) -> Response:
    await service.delete_todo(todo_id)
    return Response(status_code=204)
