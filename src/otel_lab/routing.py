"""The ``Allow`` header of a 405, for the services and the console alike."""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import Scope

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(scope: Scope) -> str | None:
    """Every method the request's path has a route for. FastAPI makes one route per
    method, and Starlette's 405 lists only the first matching route's: ``Allow: GET`` for a
    path that takes GET, PUT and DELETE. Asks the app's routes (``BaseRoute.matches``)
    method by method, as routing would."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed) or None
