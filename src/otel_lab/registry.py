"""The one table of the system's processes: name, default port, module, settings, public paths.

Settings takes its port defaults from here, ``otel-lab up`` starts what is listed here
(``runtime/plan.py``), the gateway routes by the ``paths`` here, the console scrapes every
``/metrics`` listed here, and the deploy tests check the compose file, the Kubernetes
manifests and the Prometheus config against it. To add a service, add a :class:`Service` to
:data:`SERVICES` and its ``*_port`` and ``*_url`` fields to ``Settings``
(``tests/test_registry.py`` checks they agree).

A plain module (no imports from the application), so anything can read it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# uvicorn's HTTP protocol for every service: JSON 400s for what it cannot parse. The image
# sets it as UVICORN_HTTP (Dockerfile), so the compose and Kubernetes commands get it too.
HTTP_PROTOCOL = "otel_lab.http_protocol:JsonErrorsProtocol"


@dataclass(frozen=True)
class Service:
    """An ASGI service, run as ``uvicorn --factory module:attr`` on the port in Settings'
    ``port_field`` (``attr``: the app factory, ``create_app(settings, telemetry)``)."""

    # OTEL_SERVICE_NAME, the log file, the Prometheus job and the compose/Kubernetes name.
    name: str
    port: int  # the default port, and the container port in compose and Kubernetes
    module: str
    port_field: str  # the Settings field of the port, e.g. "api_port" (env API_PORT)
    # The Settings field of an explicit base URL, e.g. "api_url" (env API_URL); None: none.
    url_field: str | None
    # Public path prefixes the gateway sends to this service (also under /api/v1).
    paths: tuple[str, ...] = ()
    attr: str = "create_app"
    health_path: str = "/health"
    # A module with ``wrap_argv(argv, settings)`` and ``environment(settings)`` that may
    # change how the service starts (e.g. under ``opentelemetry-instrument``).
    launcher: str | None = None
    # Needs PostgreSQL and Valkey (and the migrations) before it starts.
    uses_datastores: bool = True

    def uvicorn_argv(self, host: str, port: int) -> list[str]:
        """The command that serves it (``otel-lab up`` lets the launcher, if any, wrap it)."""
        return [sys.executable, "-m", "uvicorn", "--factory", f"{self.module}:{self.attr}",
                "--host", host, "--port", str(port),
                "--no-access-log",  # request logs come from our middleware, with trace ids
                "--http", HTTP_PROTOCOL,
                "--timeout-graceful-shutdown", "3"]  # fmt: skip


@dataclass(frozen=True)
class Worker:
    """The Celery worker: ``celery -A module worker``, its Prometheus metrics on ``port``."""

    name: str
    port: int
    module: str
    port_field: str


WEATHER_UPSTREAM = Service(
    "weather-upstream", 8090, "otel_lab.services.weather_upstream.app",
    "weather_upstream_port", "weather_api_url",
    launcher="otel_lab.services.weather_upstream.launch", uses_datastores=False,
)  # fmt: skip
API = Service(
    "api", 8000, "otel_lab.services.api.app", "api_port", "api_url",
    paths=("/items", "/analyze", "/weather", "/hello", "/error-simulation", "/db-operation",
           "/complex-operation"),
)  # fmt: skip
USERS = Service(
    "user-service", 5001, "otel_lab.services.users.app", "user_service_port", "user_service_url",
    paths=("/users", "/todos", "/process"),
)  # fmt: skip
ORDERS = Service(
    "order-service", 5002, "otel_lab.services.orders.app", "order_service_port",
    "order_service_url", paths=("/orders",),
)  # fmt: skip
AUDIT = Service(
    "audit-service", 5003, "otel_lab.services.audit.app", "audit_service_port",
    "audit_service_url", paths=("/audit",),
)  # fmt: skip
GATEWAY = Service("gateway", 8080, "otel_lab.services.gateway.app", "gateway_port", None)

# In start order: the gateway, last, routes to the others.
SERVICES: tuple[Service, ...] = (WEATHER_UPSTREAM, API, USERS, ORDERS, AUDIT, GATEWAY)
WORKER = Worker("worker", 9101, "otel_lab.worker.app", "worker_metrics_port")

# The service chain's hops, in call order (POST /process at each).
CHAIN: tuple[str, ...] = (USERS.name, ORDERS.name, AUDIT.name)


def service(name: str) -> Service:
    """The service called ``name``; KeyError names the known ones."""
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service {name!r} (known: {', '.join(s.name for s in SERVICES)})")


def metrics_jobs() -> dict[str, int]:
    """Every process with a ``/metrics`` endpoint (the Prometheus job) and its default port."""
    return {**{s.name: s.port for s in SERVICES}, WORKER.name: WORKER.port}
