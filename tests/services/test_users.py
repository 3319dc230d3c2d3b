"""Users and todos in user-service, through the gateway: CRUD, 404/409/422,
pagination, and the traced service and repository layers."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from otel_lab.runtime.harness import RunningSystem
from tests.conftest import Console, served, span_named, trace_id_of

V1 = "/api/v1"


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def user(gateway: httpx.Client) -> dict[str, Any]:
    response = gateway.post(f"{V1}/users", json={"name": "Todo Owner", "email": _email()})
    assert response.status_code == 201, response.text
    return response.json()


# --------------------------------------------------------------------------- users


def test_user_crud(gateway: httpx.Client) -> None:
    email = _email()
    created = gateway.post(f"{V1}/users", json={"name": "  Ada Lovelace ", "email": email.upper()})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["name"] == "Ada Lovelace"  # stripped
    assert user["email"] == email  # normalised to lower case
    assert user["tier"] == "standard"
    assert user["id"] > 1010  # the demo users keep 1001-1010

    assert gateway.get(f"{V1}/users/{user['id']}").json() == user

    updated = gateway.put(f"{V1}/users/{user['id']}", json={"tier": "gold", "name": "Ada L."})
    assert updated.status_code == 200
    assert updated.json()["tier"] == "gold" and updated.json()["name"] == "Ada L."
    assert updated.json()["email"] == email
    assert updated.json()["updated_at"] >= user["updated_at"]

    deleted = gateway.delete(f"{V1}/users/{user['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert gateway.get(f"{V1}/users/{user['id']}").status_code == 404
    assert gateway.delete(f"{V1}/users/{user['id']}").status_code == 404


def test_duplicate_email_is_a_409(gateway: httpx.Client) -> None:
    email = _email()
    assert gateway.post(f"{V1}/users", json={"name": "A", "email": email}).status_code == 201
    again = gateway.post(f"{V1}/users", json={"name": "B", "email": email.upper()})
    assert again.status_code == 409
    assert again.json()["detail"] == "a user with this email already exists"
    other = gateway.post(f"{V1}/users", json={"name": "C", "email": _email()}).json()
    taken = gateway.put(f"{V1}/users/{other['id']}", json={"email": email})
    assert taken.status_code == 409
    demo = gateway.post(f"{V1}/users", json={"name": "John", "email": "john@example.com"})
    assert demo.status_code == 409


def test_missing_users_are_404(gateway: httpx.Client) -> None:
    for method, path, body in [
        ("GET", "/users/999999", None),
        ("PUT", "/users/999999", {"name": "x"}),
        ("DELETE", "/users/999999", None),
        ("POST", "/users/999999/todos", {"title": "x"}),
        ("GET", "/users/999999/todos", None),
    ]:
        response = gateway.request(method, V1 + path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == "user 999999 not found"


def test_user_list_is_paginated(gateway: httpx.Client) -> None:
    for _ in range(3):
        gateway.post(f"{V1}/users", json={"name": "Page", "email": _email()})
    everyone = gateway.get(f"{V1}/users", params={"limit": 100})
    total = int(everyone.headers["x-total-count"])
    assert total >= 13 and len(everyone.json()) == min(total, 100)
    ids = [u["id"] for u in everyone.json()]
    assert ids == sorted(ids) and ids[:10] == list(range(1001, 1011))

    page = gateway.get(f"{V1}/users", params={"limit": 2, "offset": 3})
    assert [u["id"] for u in page.json()] == ids[3:5]
    assert page.headers["x-total-count"] == str(total)
    assert gateway.get(f"{V1}/users", params={"offset": 1_000_000}).json() == []
    assert len(gateway.get(f"{V1}/users").json()) == min(total, 50)  # default page


# --------------------------------------------------------------------------- todos


def test_todo_crud(gateway: httpx.Client, user: dict[str, Any]) -> None:
    base = f"{V1}/users/{user['id']}/todos"
    first = gateway.post(base, json={"title": "Write the runbook", "description": "for on-call"})
    assert first.status_code == 201, first.text
    todo = first.json()
    assert todo["user_id"] == user["id"] and todo["completed"] is False
    assert todo["completed_at"] is None
    done = gateway.post(base, json={"title": "Ship it", "completed": True}).json()
    assert done["completed"] is True and done["completed_at"] is not None

    assert gateway.get(f"{V1}/todos/{todo['id']}").json() == todo
    assert [t["id"] for t in gateway.get(base).json()] == [todo["id"], done["id"]]
    assert [t["id"] for t in gateway.get(base, params={"completed": "false"}).json()] == [
        todo["id"]
    ]

    completed = gateway.put(f"{V1}/todos/{todo['id']}/complete")
    assert completed.status_code == 200
    assert completed.json()["completed"] is True and completed.json()["completed_at"]
    again = gateway.put(f"{V1}/todos/{todo['id']}/complete")  # idempotent
    assert again.json()["completed_at"] == completed.json()["completed_at"]

    reopened = gateway.put(f"{V1}/todos/{todo['id']}", json={"completed": False, "title": "v2"})
    assert reopened.json()["completed"] is False and reopened.json()["completed_at"] is None
    assert reopened.json()["title"] == "v2" and reopened.json()["description"] == "for on-call"
    cleared = gateway.put(f"{V1}/todos/{todo['id']}", json={"description": None})
    assert cleared.json()["description"] is None

    assert gateway.delete(f"{V1}/todos/{todo['id']}").status_code == 204
    assert gateway.get(f"{V1}/todos/{todo['id']}").status_code == 404
    assert gateway.delete(f"{V1}/todos/{todo['id']}").status_code == 404
    assert gateway.put(f"{V1}/todos/{todo['id']}/complete").status_code == 404
    assert gateway.put(f"{V1}/todos/{todo['id']}", json={"title": "x"}).status_code == 404

    # Deleting the user deletes the todos.
    assert gateway.delete(f"{V1}/users/{user['id']}").status_code == 204
    assert gateway.get(f"{V1}/todos/{done['id']}").status_code == 404


def test_todo_lists_are_paginated(gateway: httpx.Client, user: dict[str, Any]) -> None:
    base = f"{V1}/users/{user['id']}/todos"
    ids = [gateway.post(base, json={"title": f"t{i}"}).json()["id"] for i in range(5)]
    page = gateway.get(base, params={"limit": 2, "offset": 2})
    assert [t["id"] for t in page.json()] == ids[2:4]
    assert page.headers["x-total-count"] == "5"
    everything = gateway.get(f"{V1}/todos", params={"limit": 100})
    assert int(everything.headers["x-total-count"]) >= 5
    open_only = gateway.get(f"{V1}/todos", params={"completed": "false", "limit": 100}).json()
    assert all(t["completed"] is False for t in open_only)


def test_profile_enrichment_counts_todos(gateway: httpx.Client, user: dict[str, Any]) -> None:
    base = f"{V1}/users/{user['id']}/todos"
    gateway.post(base, json={"title": "open"})
    gateway.post(base, json={"title": "done", "completed": True})
    response = gateway.post(f"{V1}/process", json={"user_id": user["id"], "action": "enrich"})
    assert response.status_code == 200, response.text
    profile = response.json()["user"]
    assert profile["todo_count"] == 2 and profile["open_todo_count"] == 1


# --------------------------------------------------------------------------- telemetry


def test_service_and_repository_layers_are_traced(gateway: httpx.Client, console: Console) -> None:
    response = gateway.post(f"{V1}/users", json={"name": "Traced", "email": _email()})
    assert response.status_code == 201
    user_id = response.json()["id"]
    # Every span of both services: the assertions below look at all of them.
    spans = console.trace(trace_id_of(response), until=served("gateway", "user-service"))
    service = span_named(spans, "service.create_user", "user-service")
    assert service["attributes"]["operation.type"] == "business_logic"
    assert service["attributes"]["api.operation"] == "create_user"
    assert service["attributes"]["user.id"] == user_id

    insert = span_named(spans, "repository.insert_user", "user-service")
    lookup = span_named(spans, "repository.get_user_by_email", "user-service")
    for repository in (insert, lookup):
        assert repository["parent_span_id"] == service["span_id"]
        assert repository["attributes"]["operation.type"] == "database"
        assert repository["attributes"]["database.system"] == "postgresql"
        assert repository["attributes"]["database.name"] == "otel_lab"
    assert insert["attributes"]["user.id"] == user_id
    statements = [s for s in spans if s["parent_span_id"] == insert["span_id"]]
    assert any("INSERT INTO users" in str(s["attributes"]) for s in statements)
    # The email is personal data: not in any span.
    assert not any("@example.com" in str(s["attributes"]) for s in spans)

    todo = gateway.post(f"{V1}/users/{user_id}/todos", json={"title": "trace me"})
    todo_id = todo.json()["id"]
    spans = console.trace(trace_id_of(todo), until=served("user-service"))
    insert_todo = span_named(spans, "repository.insert_todo", "user-service")
    assert insert_todo["attributes"]["todo.id"] == todo_id
    assert insert_todo["attributes"]["user.id"] == user_id


def test_not_found_is_an_event_not_a_span_error(gateway: httpx.Client, console: Console) -> None:
    response = gateway.get(f"{V1}/todos/2000000000")
    assert response.status_code == 404
    spans = console.trace(trace_id_of(response), until=served("user-service"))
    service = span_named(spans, "service.get_todo", "user-service")
    assert service["status"]["code"] != "ERROR"
    assert any(e["name"] == "domain_error" for e in service["events"])
    assert service["attributes"]["todo.id"] == 2_000_000_000


# --------------------------------------------------------------------------- bad input

USERS_BAD_INPUT = [
    ("POST", "/users", {}),
    ("POST", "/users", {"name": "x"}),
    ("POST", "/users", {"name": "", "email": "a@example.com"}),
    ("POST", "/users", {"name": "x" * 201, "email": "a@example.com"}),
    ("POST", "/users", {"name": "x", "email": "not-an-email"}),
    ("POST", "/users", {"name": "x", "email": "a@example.com", "tier": "platinum"}),
    ("POST", "/users", {"name": "x", "email": "a@example.com", "id": 5}),
    ("POST", "/users", {"name": "nul\u0000", "email": "a@example.com"}),
    ("POST", "/users", ["a list"]),
    ("POST", "/users", "a string"),
    ("GET", "/users/abc", None),
    ("GET", "/users/0", None),
    ("GET", "/users/-1", None),
    ("GET", "/users/99999999999", None),
    ("GET", "/users?limit=0", None),
    ("GET", "/users?limit=101", None),
    ("GET", "/users?offset=-1", None),
    ("GET", "/users?offset=1000001", None),
    ("GET", "/users?limit=abc", None),
    ("PUT", "/users/1001", {}),
    ("PUT", "/users/1001", {"name": None}),
    ("PUT", "/users/1001", {"email": "nope"}),
    ("PUT", "/users/1001", {"unknown": 1}),
    ("DELETE", "/users/abc", None),
    ("POST", "/users/1001/todos", {}),
    ("POST", "/users/1001/todos", {"title": ""}),
    ("POST", "/users/1001/todos", {"title": "x" * 201}),
    ("POST", "/users/1001/todos", {"title": "x", "completed": "maybe"}),
    ("POST", "/users/1001/todos", {"title": "x", "description": "d" * 2001}),
    ("POST", "/users/abc/todos", {"title": "x"}),
    ("GET", "/users/1001/todos?completed=maybe", None),
    ("GET", "/users/1001/todos?limit=500", None),
    ("GET", "/todos?limit=0", None),
    ("GET", "/todos?offset=x", None),
    ("GET", "/todos/abc", None),
    ("GET", "/todos/0", None),
    ("GET", "/todos/99999999999", None),
    ("PUT", "/todos/1", {}),
    ("PUT", "/todos/1", {"title": None}),
    ("PUT", "/todos/1", {"completed": None}),
    ("PUT", "/todos/abc/complete", None),
    ("DELETE", "/todos/-3", None),
]


@pytest.mark.parametrize(("method", "path", "body"), USERS_BAD_INPUT)
def test_bad_input_is_a_4xx_json_error(
    gateway: httpx.Client, method: str, path: str, body: Any
) -> None:
    response = gateway.request(method, V1 + path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"name=x", "application/x-www-form-urlencoded"),
     (b"", "application/json"), (b"\xff\xfe", "application/json")],
)  # fmt: skip
def test_malformed_bodies_are_422(system: RunningSystem, content: bytes, content_type: str) -> None:
    response = httpx.post(
        system.url("user-service") + "/users",
        content=content,
        headers={"content-type": content_type},
    )
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
