"""The gateway's routing table: which service owns which public path, from the registry.

A plain module (no app, no telemetry set-up), so tools and tests can read it.
"""

from __future__ import annotations

from otel_lab.registry import SERVICES

API_PREFIX = "/api/v1"

# The routing table: public path prefix -> the service that owns it (the registry's ``paths``).
ROUTES: dict[str, str] = {prefix: s.name for s in SERVICES for prefix in s.paths}
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def owner_of(path: str) -> str | None:
    """The service that owns a public path (with or without ``/api/v1``), or None."""
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX) :]
    for prefix, service in ROUTES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return None
