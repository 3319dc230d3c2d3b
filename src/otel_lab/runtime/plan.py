"""What ``otel-lab up`` runs, and how each child is started.

The services and the worker are the registry's (``otel_lab.registry``); to add a service,
add it there.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import otel_lab
from otel_lab import faults
from otel_lab.registry import SERVICES, WORKER, Service
from otel_lab.runtime.supervisor import (
    ChildSpec,
    PortClaim,
    ReadyCheck,
    any_of,
    every,
    http_ok,
    log_matches,
)
from otel_lab.settings import Settings

PACKAGE_DIR = Path(otel_lab.__file__).resolve().parent
MIGRATIONS_INI = PACKAGE_DIR / "migrations" / "alembic.ini"
MIGRATION_VERSIONS = PACKAGE_DIR / "migrations" / "versions"
CONSOLE_MODULE = "otel_lab.console"
TRAFFIC_MODULE = "otel_lab.loadgen"
WORKER_NODE = "worker@%h"


def setting_name(field_name: str) -> str:
    """The environment variable of a Settings field (``api_port`` -> ``API_PORT``)."""
    alias = Settings.model_fields[field_name].alias
    return alias or field_name.upper()


def connect_host(settings: Settings) -> str:
    """Where to reach our own servers: a wildcard bind is still reached on loopback."""
    return "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host


def port_env(settings: Settings) -> dict[str, str]:
    """Every ``*_port`` setting as its environment variable, so children agree on ports."""
    env = {"OTEL_LAB_HOST": settings.host}
    for field_name in Settings.model_fields:
        value = getattr(settings, field_name)
        if field_name.endswith("_port") and value is not None:
            env[setting_name(field_name)] = str(value)
    return env


def child_env(
    settings: Settings, data_dir: Path, database_url: str, redis_url: str
) -> dict[str, str]:
    """Environment shared by every child; each spec adds its own OTEL_SERVICE_NAME."""
    host = connect_host(settings)
    # A console started with a token accepts OTLP only with it (see docs/console.md).
    token = settings.console_token
    auth = {"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {token}"} if token else {}
    # Locally, a trace should be in the console a second after the request, not five.
    snappy = {
        name: "1000"
        for name in ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BLRP_SCHEDULE_DELAY")
        if name not in os.environ
    }
    return {
        **port_env(settings),
        **snappy,
        **auth,
        "OTEL_LAB_DATA_DIR": str(data_dir),
        # The fault flags these children follow (otel-lab fault, the console's Scenarios).
        faults.PATH_ENV: str(data_dir / faults.FILE_NAME),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # A user's own endpoint (an outside collector) wins over the console.
        "OTEL_EXPORTER_OTLP_ENDPOINT": os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host}:{settings.console_otlp_port}"
        ),
        "OTEL_SEMCONV_STABILITY_OPT_IN": os.environ.get(
            "OTEL_SEMCONV_STABILITY_OPT_IN", "http,database"
        ),
        "PYTHONUNBUFFERED": "1",  # logs reach the log file as they happen
    }


def _claim(settings: Settings, field_name: str) -> PortClaim:
    return PortClaim(getattr(settings, field_name), setting_name(field_name), settings.host)


_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


def head_revision(versions: Path = MIGRATION_VERSIONS) -> str | None:
    """The newest migration's id, read from the version files without importing Alembic:
    the one revision that no file names as its ``down_revision``. None when that is not
    exactly one (a branch, a merge): then the migrations simply run."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        for name, value in _REVISION_LINE.findall(path.read_text()):
            ids = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (revisions if name == "revision" else parents).update(ids)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def schema_at_head(database_url: str) -> bool:
    """One query: is the database already at the newest migration? Any doubt (no table, no
    connection, an unexpected revision) answers False, and the migrations run as usual."""
    head = head_revision()
    if head is None:
        return False
    import psycopg

    # libpq's URI is SQLAlchemy's without the driver ("postgresql+psycopg://..."); SQLAlchemy
    # itself (0.3 s of CPU to import) has no business in the supervisor.
    scheme, _, rest = database_url.partition("://")
    try:
        with psycopg.connect(f"{scheme.split('+')[0]}://{rest}", connect_timeout=2) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except (psycopg.Error, OSError):
        return False
    return [row[0] for row in rows] == [head]


def migrations_spec(env: Mapping[str, str]) -> ChildSpec | None:
    """``alembic upgrade head``; None when the schema is already there.

    Checking costs one query; running Alembic costs a Python process (1-5 s on two busy cores).
    """
    if env.get("DATABASE_URL") and schema_at_head(env["DATABASE_URL"]):
        return None
    argv = [sys.executable, "-m", "alembic", "-c", str(MIGRATIONS_INI), "upgrade", "head"]
    return ChildSpec("migrations", argv, env={**env, "OTEL_SERVICE_NAME": "migrations"})


def scrape_targets(settings: Settings) -> str:
    """``job=url,...`` of every service's and the worker's /metrics: what the console scrapes
    in embedded mode, with the job names Prometheus uses in stack mode."""
    host = connect_host(settings)
    jobs = [(s.name, settings.port_of(s)) for s in SERVICES]
    jobs.append((WORKER.name, settings.port_of(WORKER)))
    return ",".join(f"{job}=http://{host}:{port}/metrics" for job, port in jobs)


def console_spec(settings: Settings, data_dir: Path, env: Mapping[str, str]) -> ChildSpec:
    """The built-in telemetry console (OTLP receiver + UI)."""
    ui = f"http://{connect_host(settings)}:{settings.console_ui_port}"
    db = data_dir / "console" / "telemetry.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", CONSOLE_MODULE,
            "--otlp-port", str(settings.console_otlp_port),
            "--ui-port", str(settings.console_ui_port), "--db", str(db)]  # fmt: skip
    scrape = {"CONSOLE_SCRAPE_TARGETS": scrape_targets(settings)}
    return ChildSpec(
        "console", argv, env={**env, **scrape, "OTEL_SERVICE_NAME": "console"},
        ready=http_ok(f"{ui}/api/health"), url=ui,
        ports=(_claim(settings, "console_otlp_port"), _claim(settings, "console_ui_port")),
    )  # fmt: skip


def service_spec(service: Service, settings: Settings, env: Mapping[str, str]) -> ChildSpec:
    port = settings.port_of(service)
    url = f"http://{connect_host(settings)}:{port}"
    argv = service.uvicorn_argv(settings.host, port)
    extra_env: dict[str, str] = {}
    if service.launcher:
        launcher = importlib.import_module(service.launcher)
        argv = launcher.wrap_argv(argv, settings)
        extra_env = launcher.environment(settings)
    return ChildSpec(
        service.name, argv, env={**env, "OTEL_SERVICE_NAME": service.name, **extra_env},
        ready=http_ok(url + service.health_path), ready_timeout=60.0, url=url,
        ports=(_claim(settings, service.port_field),),
    )  # fmt: skip


def _celery_ping(broker_url: str, node: str) -> ReadyCheck:
    """Ready when the worker answers a broadcast ping (independent of its log format)."""

    def check() -> bool:
        from celery import Celery

        probe = Celery("otel-lab-probe", broker=broker_url)
        try:
            replies = probe.control.ping(destination=[node], timeout=0.5) or []
        except Exception:  # broker hiccup: not ready yet
            return False
        finally:
            probe.close()
        return any(node in reply for reply in replies)

    return check


def worker_spec(
    settings: Settings, env: Mapping[str, str], log_dir: Path, redis_url: str
) -> ChildSpec:
    """The Celery worker.

    The threads pool keeps one process, so telemetry and Prometheus metrics stay coherent
    (see ``otel_lab.worker.app``). Ready on Celery's "<node> ready." log line, or, should
    the log format hide it, on a control ping (from 5 s on: the ping imports Celery into
    the supervisor, half a second of CPU that the log line nearly always saves).
    """
    import socket

    node = WORKER_NODE.replace("%h", socket.gethostname())
    argv = [sys.executable, "-m", "celery", "-A", WORKER.module, "worker",
            "--loglevel", "INFO", "--pool", "threads", "--concurrency", "2", "-Q", "celery",
            "-n", node, "--without-mingle", "--without-gossip"]  # fmt: skip
    ready = any_of(
        log_matches(log_dir / f"{WORKER.name}.log", r"\bready\."),
        every(5.0, _celery_ping(redis_url, node)),
    )
    return ChildSpec(
        WORKER.name, argv, env={**env, "OTEL_SERVICE_NAME": WORKER.name}, ready=ready,
        ready_timeout=60.0, ports=(_claim(settings, WORKER.port_field),),
        url=f"http://{connect_host(settings)}:{settings.port_of(WORKER)}/metrics",
    )  # fmt: skip


def traffic_spec(settings: Settings, env: Mapping[str, str]) -> ChildSpec:
    """Background traffic through the gateway (``--traffic``, the default), once every
    service is ready.

    ``python -m otel_lab.loadgen`` (the same as ``otel-lab load``) with a long duration and
    a gentle rate, so the console always has fresh traces.
    """
    argv = [sys.executable, "-m", TRAFFIC_MODULE, "--quiet", "--duration", str(365 * 86400),
            "--concurrency", "2", "--delay", "1.0"]  # fmt: skip
    return ChildSpec("traffic", argv, env={**env, "OTEL_SERVICE_NAME": "loadgen"},
                     after=tuple(service.name for service in SERVICES))  # fmt: skip


@dataclass
class Plan:
    """The children ``otel-lab up`` starts besides PostgreSQL, Valkey and the migrations.

    Each starts as soon as what it waits for (``ChildSpec.after``) is ready: the console,
    the services and the worker at once, side by side with PostgreSQL's start and the
    migrations (each needs only the datastores' addresses to start; none touches the
    database before a request comes), the background traffic once the services are ready.
    """

    children: list[ChildSpec]

    @property
    def port_claims(self) -> list[PortClaim]:
        return [claim for spec in self.children for claim in spec.ports]


def plan_children(
    settings: Settings, data_dir: Path, env: Mapping[str, str], *, traffic: bool = True
) -> Plan:
    """The children of ``otel-lab up`` (see :class:`Plan`), in start order."""
    children = [console_spec(settings, data_dir, env)]
    children += [service_spec(service, settings, env) for service in SERVICES]
    children.append(worker_spec(settings, env, data_dir / "logs", env.get("REDIS_URL", "")))
    if traffic:
        children.append(traffic_spec(settings, env))
    return Plan(children)
