"""The traffic mix: one entry per kind of request, with a weight.

Every scenario goes through the gateway by default, so each request starts its trace at
the front door just as a user's would. Expected error responses (a 404 for an unknown
item, the 500s of ``/error-simulation``) are part of the mix on purpose.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

Call = Callable[[httpx.AsyncClient, "Memory"], Awaitable[httpx.Response]]

CITIES = ("london", "paris", "tokyo", "new-york", "sydney", "berlin", "lagos", "lima")


@dataclass
class Memory:
    """Ids created earlier in the run, so reads find something (and miss the cache first)."""

    items: list[int] = field(default_factory=list)
    users: list[int] = field(default_factory=list)

    def remember(self, bucket: list[int], value: object) -> None:
        if isinstance(value, int):
            bucket.append(value)
            del bucket[:-200]


@dataclass(frozen=True)
class Scenario:
    name: str
    weight: int
    call: Call
    expected: frozenset[int] = frozenset({200, 201})


async def _create_item(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    response = await client.post(
        "/items", json={"name": f"load item {random.randrange(10**6)}", "description": "load"}
    )
    if response.status_code == 201:
        memory.remember(memory.items, response.json().get("id"))
    return response


async def _read_item(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    if not memory.items:
        return await _create_item(client, memory)
    return await client.get(f"/items/{random.choice(memory.items)}")


async def _unknown_item(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    return await client.get(f"/items/{random.randrange(10**9, 2 * 10**9)}")


async def _analyze(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    a, b = round(random.uniform(-100, 100), 2), round(random.uniform(-100, 100), 2)
    return await client.post("/analyze", json={"a": a, "b": b})


async def _chain(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    user_id = random.randint(1001, 1010)
    return await client.post("/api/v1/process", json={"user_id": user_id, "action": "load"})


async def _create_user(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    tag = random.randrange(10**9)
    response = await client.post(
        "/users", json={"name": f"Load User {tag}", "email": f"load-{tag}@example.com"}
    )
    if response.status_code == 201:
        memory.remember(memory.users, response.json().get("id"))
    return response


async def _user_todos(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    if not memory.users:
        return await _create_user(client, memory)
    user_id = random.choice(memory.users)
    await client.post(f"/users/{user_id}/todos", json={"title": "load todo"})
    return await client.get(f"/users/{user_id}/todos")


def _get(path: str) -> Call:
    async def call(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
        return await client.get(path)

    return call


async def _weather(client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
    return await client.get(f"/weather/{random.choice(CITIES)}")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("POST /items", 3, _create_item),
    Scenario("GET /items/{id}", 6, _read_item),
    Scenario("GET /items/{unknown}", 1, _unknown_item, frozenset({404})),
    Scenario("POST /analyze", 3, _analyze),
    Scenario("POST /api/v1/process", 3, _chain),
    Scenario("GET /weather/{city}", 2, _weather),
    Scenario("GET /hello", 2, _get("/hello")),
    Scenario("GET /error-simulation", 1, _get("/error-simulation"), frozenset({200, 500})),
    Scenario("GET /db-operation", 1, _get("/db-operation")),
    Scenario("GET /complex-operation", 1, _get("/complex-operation")),
    Scenario("POST /users", 1, _create_user),
    Scenario("users' todos", 2, _user_todos),
    Scenario("GET /health", 1, _get("/health")),
)


def pick(scenarios: tuple[Scenario, ...] = SCENARIOS) -> Scenario:
    return random.choices(scenarios, weights=[s.weight for s in scenarios])[0]
