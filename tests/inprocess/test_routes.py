"""``include_routes`` registers a router's routes on the app itself: the same routes, the same
``/openapi.json`` and the same dependency overrides as FastAPI's ``include_router``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute

from otel_lab.services.api import analyze, items, showcase, weather
from otel_lab.services.audit import routes as audit_routes
from otel_lab.services.base import include_routes
from otel_lab.services.orders import routes as order_routes
from otel_lab.services.users import chain
from otel_lab.services.users import routes as user_routes
from otel_lab.services.weather_upstream import app as weather_upstream
from tests.inprocess.conftest import run

ROUTERS = {
    "api": (items.router, analyze.router, weather.router, showcase.router),
    "user-service": (chain.router, user_routes.users_router, user_routes.todos_router),
    "order-service": (order_routes.router,),
    "audit-service": (audit_routes.router,),
    "weather-upstream": (weather_upstream.router,),
}


def _route_table(routes: list[Any]) -> list[tuple[str, frozenset[str], str, tuple[str, ...]]]:
    return [
        (route.path, frozenset(route.methods or ()), route.name, tuple(map(str, route.tags)))
        for route in routes
        if isinstance(route, APIRoute)
    ]


@pytest.mark.parametrize("service", sorted(ROUTERS))
def test_same_routes_and_openapi_as_include_router(service: str) -> None:
    included, flattened = FastAPI(), FastAPI()
    for router in ROUTERS[service]:
        included.include_router(router)
    include_routes(flattened, *ROUTERS[service])

    # Every route of the routers, in order, on the app's own router: none nested.
    own = [route for router in ROUTERS[service] for route in router.routes]
    assert _route_table(flattened.router.routes[-len(own) :]) == _route_table(own)
    assert flattened.openapi() == included.openapi()


def who() -> str:
    return "real"


def test_dependency_overrides_reach_flattened_routes() -> None:
    router = APIRouter(prefix="/things", tags=["things"])

    @router.get("/{thing_id}")
    async def read(thing_id: int, name: Annotated[str, Depends(who)]) -> dict[str, object]:
        return {"id": thing_id, "by": name}

    app = FastAPI()
    include_routes(app, router)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    assert run(get("/things/7")).json() == {"id": 7, "by": "real"}
    app.dependency_overrides[who] = lambda: "override"
    assert run(get("/things/7")).json() == {"id": 7, "by": "override"}
    assert run(get("/things/x")).status_code == 422


def test_only_path_operations_are_flattened() -> None:
    router = APIRouter()
    router.add_route("/plain", lambda request: PlainTextResponse("plain"))
    with pytest.raises(TypeError, match="only FastAPI path operations"):
        include_routes(FastAPI(), router)


def test_routers_with_a_lifespan_of_their_own_are_refused() -> None:
    @asynccontextmanager
    async def lifespan(app: APIRouter) -> AsyncIterator[None]:
        yield

    with pytest.raises(TypeError, match="a lifespan of its own"):
        include_routes(FastAPI(), APIRouter(lifespan=lifespan))
    with pytest.raises(TypeError, match="a lifespan of its own"):
        include_routes(FastAPI(), APIRouter(on_startup=[lambda: None]))
