"""The traffic mix: one entry per kind of request, with a weight.

Every scenario goes through the gateway by default, so each request starts its trace at
the front door just as a user's would. Expected error responses (a 404 for an unknown
item, the 500s of ``/error-simulation``) are part of the mix on purpose. The scenarios are
data (:class:`Request` lists), so ``otel-lab load`` and the Locust file send the same mix.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from otel_lab.jsontypes import JSONValue

CITIES = ("london", "paris", "tokyo", "new-york", "sydney", "berlin", "lagos", "lima")


@dataclass(frozen=True)
class Request:
    """One HTTP request of a scenario, as data: ``otel-lab load`` (httpx, async) and the
    Locust file (scripts/locustfile.py) both send it."""

    method: str
    path: str
    json: Mapping[str, JSONValue] | None = None
    keep_id_in: str | None = None  # the Memory list that keeps the id of a 201 answer


@dataclass
class Memory:
    """Ids created earlier in the run, so reads find something (and miss the cache first)."""

    items: list[int] = field(default_factory=list)
    users: list[int] = field(default_factory=list)

    def remember(self, bucket: list[int], value: object) -> None:
        if isinstance(value, int):
            bucket.append(value)
            del bucket[:-200]

    def record(self, request: Request, status: int, body: Callable[[], object]) -> None:
        """Keep the id a 201 answer to ``request`` created (``body`` reads the JSON)."""
        if request.keep_id_in and status == 201:
            created = body()
            if isinstance(created, dict):
                self.remember(getattr(self, request.keep_id_in), created.get("id"))


Steps = Callable[[Memory], list[Request]]


@dataclass(frozen=True)
class Scenario:
    name: str
    weight: int
    steps: Steps  # the requests to send, given what the run has created so far
    expected: frozenset[int] = frozenset({200, 201})

    async def call(self, client: httpx.AsyncClient, memory: Memory) -> httpx.Response:
        """Send the steps in order; the last answer is the scenario's."""
        response: httpx.Response | None = None
        for request in self.steps(memory):
            response = await client.request(request.method, request.path, json=request.json)
            memory.record(request, response.status_code, response.json)
        assert response is not None, f"{self.name}: no request"
        return response


def _create_item(memory: Memory) -> list[Request]:
    body = {"name": f"load item {random.randrange(10**6)}", "description": "load"}
    return [Request("POST", "/items", body, keep_id_in="items")]


def _read_item(memory: Memory) -> list[Request]:
    if not memory.items:
        return _create_item(memory)
    return [Request("GET", f"/items/{random.choice(memory.items)}")]


def _unknown_item(memory: Memory) -> list[Request]:
    return [Request("GET", f"/items/{random.randrange(10**9, 2 * 10**9)}")]


def _analyze(memory: Memory) -> list[Request]:
    a, b = round(random.uniform(-100, 100), 2), round(random.uniform(-100, 100), 2)
    return [Request("POST", "/analyze", {"a": a, "b": b})]


def _chain(memory: Memory) -> list[Request]:
    user_id = random.randint(1001, 1010)
    return [Request("POST", "/api/v1/process", {"user_id": user_id, "action": "load"})]


def _create_user(memory: Memory) -> list[Request]:
    tag = random.randrange(10**9)
    body = {"name": f"Load User {tag}", "email": f"load-{tag}@example.com"}
    return [Request("POST", "/users", body, keep_id_in="users")]


def _user_todos(memory: Memory) -> list[Request]:
    if not memory.users:
        return _create_user(memory)
    user_id = random.choice(memory.users)
    return [
        Request("POST", f"/users/{user_id}/todos", {"title": "load todo"}),
        Request("GET", f"/users/{user_id}/todos"),
    ]


def _get(path: str) -> Steps:
    return lambda memory: [Request("GET", path)]


def _weather(memory: Memory) -> list[Request]:
    return [Request("GET", f"/weather/{random.choice(CITIES)}")]


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
