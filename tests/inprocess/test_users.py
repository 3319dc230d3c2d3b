"""user-service's users and todos in-process: every statement of the Core repositories
(autocommit, built once) against the session's real PostgreSQL, with its answers, its
404/409 paths and its spans. tests/services/test_users.py runs the same through the gateway.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from otel_lab.services.users.app import create_app as create_users
from tests.inprocess.conftest import Recorded, run, served, settings_for

pytestmark = pytest.mark.timeout(120)


def _email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


def _users(recorded: Recorded, database_url: str) -> Any:
    return create_users(settings_for(DATABASE_URL=database_url), recorded.telemetry)


def test_users_crud_and_conflicts(recorded: Recorded, database_url: str) -> None:
    email, other_email = _email(), _email()

    async def go() -> dict[str, httpx.Response]:
        async with served(_users(recorded, database_url)) as client:
            created = await client.post("/users", json={"name": "Ada", "email": email})
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            other = await client.post("/users", json={"name": "B", "email": other_email})
            return {
                "created": created,
                "taken": await client.post("/users", json={"name": "C", "email": email}),
                "read": await client.get(f"/users/{user_id}"),
                "updated": await client.put(f"/users/{user_id}", json={"tier": "gold"}),
                "email_taken": await client.put(
                    f"/users/{other.json()['id']}", json={"email": email}
                ),
                "page": await client.get("/users", params={"limit": 2, "offset": 1}),
                "deleted": await client.delete(f"/users/{user_id}"),
                "gone": await client.get(f"/users/{user_id}"),
                "deleted_again": await client.delete(f"/users/{user_id}"),
                "update_gone": await client.put(f"/users/{user_id}", json={"name": "x"}),
            }

    r = run(go())
    user = r["created"].json()
    assert r["created"].status_code == 201
    assert user["tier"] == "standard" and user["id"] > 1010
    assert r["read"].json() == user
    assert r["updated"].status_code == 200 and r["updated"].json()["tier"] == "gold"
    assert r["updated"].json()["updated_at"] > user["updated_at"]  # set by the UPDATE
    for conflict in (r["taken"], r["email_taken"]):
        assert conflict.status_code == 409
        assert conflict.json()["detail"] == "a user with this email already exists"
    assert [u["id"] for u in r["page"].json()] == [1002, 1003]
    assert int(r["page"].headers["x-total-count"]) >= 12
    assert r["deleted"].status_code == 204 and r["deleted"].content == b""
    for missing in (r["gone"], r["deleted_again"], r["update_gone"]):
        assert missing.status_code == 404
        assert missing.json()["detail"] == f"user {user['id']} not found"


def test_todos_crud_filters_and_cascade(recorded: Recorded, database_url: str) -> None:
    async def go() -> dict[str, Any]:
        async with served(_users(recorded, database_url)) as client:
            user = (await client.post("/users", json={"name": "T", "email": _email()})).json()
            base = f"/users/{user['id']}/todos"
            first = (await client.post(base, json={"title": "a", "description": "d"})).json()
            done = (await client.post(base, json={"title": "b", "completed": True})).json()
            out: dict[str, Any] = {"user": user, "first": first, "done": done}
            out["open"] = await client.get(base, params={"completed": "false"})
            out["page"] = await client.get(base, params={"limit": 1, "offset": 1})
            out["all_open"] = await client.get("/todos", params={"completed": "false"})
            out["completed"] = await client.put(f"/todos/{first['id']}/complete")
            out["again"] = await client.put(f"/todos/{first['id']}/complete")
            out["reopened"] = await client.put(
                f"/todos/{first['id']}", json={"completed": False, "title": "a2"}
            )
            out["cleared"] = await client.put(f"/todos/{first['id']}", json={"description": None})
            out["no_user"] = await client.post("/users/2000000000/todos", json={"title": "x"})
            out["list_no_user"] = await client.get("/users/2000000000/todos")
            out["deleted"] = await client.delete(f"/todos/{first['id']}")
            out["deleted_again"] = await client.delete(f"/todos/{first['id']}")
            out["complete_gone"] = await client.put(f"/todos/{first['id']}/complete")
            await client.delete(f"/users/{user['id']}")
            out["cascaded"] = await client.get(f"/todos/{done['id']}")
            return out

    r = run(go())
    first, done = r["first"], r["done"]
    assert first["user_id"] == r["user"]["id"] and first["completed"] is False
    assert first["completed_at"] is None and first["description"] == "d"
    assert done["completed"] is True and done["completed_at"] is not None
    assert [t["id"] for t in r["open"].json()] == [first["id"]]
    assert r["open"].headers["x-total-count"] == "1"
    assert [t["id"] for t in r["page"].json()] == [done["id"]]
    assert r["page"].headers["x-total-count"] == "2"
    assert first["id"] in [t["id"] for t in r["all_open"].json()] or (
        int(r["all_open"].headers["x-total-count"]) > 50
    )
    completed = r["completed"].json()
    assert completed["completed"] is True and completed["completed_at"]
    assert r["again"].json()["completed_at"] == completed["completed_at"]  # idempotent
    reopened = r["reopened"].json()
    assert reopened["completed"] is False and reopened["completed_at"] is None
    assert reopened["title"] == "a2" and reopened["description"] == "d"
    assert r["cleared"].json()["description"] is None
    for missing, detail in [
        (r["no_user"], "user 2000000000 not found"),
        (r["list_no_user"], "user 2000000000 not found"),
        (r["deleted_again"], f"todo {first['id']} not found"),
        (r["complete_gone"], f"todo {first['id']} not found"),
        (r["cascaded"], f"todo {done['id']} not found"),
    ]:
        assert missing.status_code == 404, missing.text
        assert missing.json()["detail"] == detail
    assert r["deleted"].status_code == 204


def test_one_statement_per_repository_call(recorded: Recorded, database_url: str) -> None:
    async def go() -> None:
        async with served(_users(recorded, database_url)) as client:
            user = await client.post("/users", json={"name": "S", "email": _email()})
            await client.post(f"/users/{user.json()['id']}/todos", json={"title": "t"})
            await client.get(f"/users/{user.json()['id']}/todos")
            await client.delete(f"/users/{user.json()['id']}")

    run(go())
    # The engine is traced to the app's providers: its statements are in this test's memory.
    spans = recorded.spans.get_finished_spans()
    statements = [s.name.split()[0] for s in spans if s.kind is SpanKind.CLIENT]
    # Autocommit: no BEGIN/COMMIT/ROLLBACK round trips around them. The todo is inserted
    # without reading its user first (INSERT ... SELECT), the list reads the user, the
    # count and the page, the delete is one DELETE ... RETURNING.
    assert statements == ["SELECT", "INSERT", "INSERT", "SELECT", "SELECT", "SELECT", "DELETE"]
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans)
    # Each statement under its repository span, each repository span under its operation's.
    by_id = {s.context.span_id: s for s in spans}

    def parent_name(span: Any) -> str:
        return by_id[span.parent.span_id].name

    repository = [s for s in spans if s.name.startswith("repository.")]
    assert [s.name for s in repository] == [
        "repository.get_user_by_email", "repository.insert_user", "repository.insert_todo",
        "repository.get_user", "repository.list_todos", "repository.delete_user",
    ]  # fmt: skip
    assert [parent_name(s) for s in repository] == [
        "service.create_user", "service.create_user", "service.create_todo",
        "service.list_todos", "service.list_todos", "service.delete_user",
    ]  # fmt: skip
    assert all(parent_name(s).startswith("repository.") for s in spans if s.kind is SpanKind.CLIENT)
