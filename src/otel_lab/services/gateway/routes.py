"""The gateway's routing table: which service owns which public path. The only copy.

A plain module (no app, no telemetry set-up), so tools and tests can read it.
"""

from __future__ import annotations

API_PREFIX = "/api/v1"

# The routing table: public path prefix -> the service that owns it. Nowhere else.
ROUTES: dict[str, str] = {
    "/items": "api",
    "/analyze": "api",
    "/weather": "api",
    "/hello": "api",
    "/error-simulation": "api",
    "/db-operation": "api",
    "/complex-operation": "api",
    "/users": "user-service",
    "/todos": "user-service",
    "/process": "user-service",
    "/orders": "order-service",
    "/audit": "audit-service",
}
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def owner_of(path: str) -> str | None:
    """The service that owns a public path (with or without ``/api/v1``), or None."""
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX) :]
    for prefix, service in ROUTES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return None
