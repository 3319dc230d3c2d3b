"""What the services' structure costs per request: typed ``Depends`` aliases for lifespan
state (instead of reading ``app.state``; async, and the same as plain ``def`` functions,
which FastAPI runs on a worker thread), a response model (instead of a ``JSONResponse``
built by hand) and routers registered with FastAPI's ``include_router`` (nested, matched
twice) against ``services.base.include_routes`` (the routes on the app), each measured
alone on a bare FastAPI app driven through ASGI in-process, so neither the network nor
telemetry is in the figure.

    .venv/bin/python scripts/bench_deps.py                # 20,000 requests per variant
    .venv/bin/python scripts/bench_deps.py --requests 50000

Prints the process CPU time per request of each variant and the ratio to its baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from otel_lab.services.base import include_routes
from otel_lab.services.deps import lifespan_state

Engine = Annotated[object, Depends(lifespan_state("engine"))]
Redis = Annotated[object, Depends(lifespan_state("redis"))]
Settings = Annotated[object, Depends(lifespan_state("settings"))]


def _sync_state(request: Request) -> object:  # a plain def: FastAPI runs it on a thread
    return request.state.engine


SyncDep = Annotated[object, Depends(_sync_state)]


class Out(BaseModel):
    id: int
    name: str
    tags: list[str]


def _app() -> FastAPI:
    app = FastAPI()
    app.state.engine = app.state.redis = app.state.settings = object()

    @app.get("/state/{item_id}")
    async def by_app_state(item_id: int, request: Request) -> JSONResponse:
        _ = request.app.state.engine, request.app.state.redis, request.app.state.settings
        return JSONResponse({"id": item_id, "name": "x", "tags": ["a", "b"]})

    @app.get("/deps/{item_id}")
    async def by_depends(
        item_id: int, engine: Engine, redis: Redis, settings: Settings
    ) -> JSONResponse:
        return JSONResponse({"id": item_id, "name": "x", "tags": ["a", "b"]})

    @app.get("/sync/{item_id}")
    async def by_sync_depends(item_id: int, a: SyncDep, b: SyncDep, c: SyncDep) -> JSONResponse:
        return JSONResponse({"id": item_id, "name": "x", "tags": ["a", "b"]})

    @app.get("/model/{item_id}")
    async def with_model(item_id: int) -> Out:
        return Out(id=item_id, name="x", tags=["a", "b"])

    @app.get("/dict/{item_id}")
    async def with_json_response(item_id: int) -> JSONResponse:
        return JSONResponse({"id": item_id, "name": "x", "tags": ["a", "b"]})

    return app


def _routers_app(*, flattened: bool) -> FastAPI:
    """Four routers of five routes each, as the api has four: a request for the last route
    of the last router, either through FastAPI's included routers or on the app itself."""
    app = FastAPI()
    routers = []
    for i in range(4):
        router = APIRouter(prefix=f"/r{i}", tags=[f"r{i}"])
        for j in range(5):

            @router.get(f"/p{j}/{{item_id}}")
            async def route(item_id: int) -> JSONResponse:
                return JSONResponse({"id": item_id, "name": "x", "tags": ["a", "b"]})

        routers.append(router)
    if flattened:
        include_routes(app, *routers)
    else:
        for router in routers:
            app.include_router(router)
    return app


async def _drive(app: FastAPI, path: str, requests: int) -> float:
    """CPU seconds per request for ``requests`` GETs of ``path``."""
    state = {"engine": object(), "redis": object(), "settings": object()}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "server": ("bench", 80),
             "client": ("127.0.0.1", 1), "state": state}  # fmt: skip
    call: Callable[..., Awaitable[None]] = app
    for _ in range(500):  # warm-up
        await call(dict(scope), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await call(dict(scope), receive, send)
    return (time.process_time() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    app = _app()
    figures = {
        path: asyncio.run(_drive(app, path + "/7", args.requests))
        for path in ("/state", "/deps", "/sync", "/dict", "/model")
    }
    for name, flattened in (("/included", False), ("/flattened", True)):
        figures[name] = asyncio.run(
            _drive(_routers_app(flattened=flattened), "/r3/p4/7", args.requests)
        )
    for label, base, variant in (
        ("3 lifespan-state Depends vs app.state", "/state", "/deps"),
        ("the same as plain-def dependencies", "/state", "/sync"),
        ("response model vs JSONResponse", "/dict", "/model"),
        ("include_router vs include_routes", "/included", "/flattened"),
    ):
        b, v = figures[base] * 1e6, figures[variant] * 1e6
        print(f"{label:40s} {b:7.1f} us -> {v:7.1f} us per request ({v / b:.2f}x, {v - b:+.1f} us)")


if __name__ == "__main__":
    main()
