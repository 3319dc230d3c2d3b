"""Fault scenarios switched on and off at run time, with OpenFeature and flagd flag definitions.

The OpenTelemetry demo's way: each fault is a boolean flag in a flagd flag file
(``<data dir>/flags.flagd.json``, or ``FLAGD_OFFLINE_FLAG_SOURCE_PATH``); the services read it
through OpenFeature's flagd provider with its in-process resolver. In stack and cluster modes
a flagd container serves the same file (``deploy/flagd/flags.flagd.json``) and the services
sync from it (``FLAGD_HOST``, ``FLAGD_RESOLVER=in-process``). ``otel-lab fault on NAME``,
the console's Scenarios page and ``POST /api/scenarios/{name}`` rewrite the file; the
provider notices the change within about a second.

Which flags a process follows: ``FLAGD_HOST`` (a flagd server), else the file
``FLAGD_OFFLINE_FLAG_SOURCE_PATH`` names (``otel-lab up`` sets it for its children), else
none: every fault stays off.

The hot path pays a set lookup: a background thread re-evaluates every fault flag through
OpenFeature every half second (one evaluation costs about 20 us here) and publishes the set
of active faults; ``active(name)`` reads that set. A process that follows no flags starts
no thread.

Every fault marks what it touches: the span it slows or fails gets ``otel_lab.fault`` =
the fault's name and a ``fault`` event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from otel_lab.jsontypes import JSONObject
from otel_lab.settings import Settings, get_settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("otel_lab.faults")

PATH_ENV = "FLAGD_OFFLINE_FLAG_SOURCE_PATH"  # the flagd provider's own variables
SERVER_ENV = "FLAGD_HOST"  # set in stack mode: flags come from a flagd server
FILE_NAME = "flags.flagd.json"
REFRESH_SECONDS = 0.5
ATTRIBUTE = "otel_lab.fault"


@dataclass(frozen=True)
class Fault:
    name: str
    service: str
    description: str
    panel: str  # a dashboard panel it moves: "dashboard title / panel title"
    alert: str  # an alert it fires
    dashboard: str = "otel-lab-overview"  # the uid of the panel's dashboard


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "slow-database",
            "order-service",
            "Every order's pricing query waits 0.6-0.9 s in PostgreSQL (pg_sleep), so the "
            "chain answers in about a second instead of milliseconds.",
            "Otel Lab - Overview / Request latency p50 / p95",
            "SLOLatencyBurnRateFast",
        ),
        Fault(
            "audit-errors",
            "audit-service",
            "audit-service fails half of its audit writes with a 500, so the chain fails.",
            "Otel Lab - Overview / Error rate (5xx)",
            "High5xxRate",
        ),
        Fault(
            "cache-outage",
            "api",
            "The items cache is unreachable: every cache call fails, the breaker opens, and "
            "every item read goes to PostgreSQL.",
            "Otel Lab - Overview / Cache hit rate",
            "CacheHitRateCollapse",
        ),
        Fault(
            "n-plus-one",
            "user-service",
            "GET /users loads each listed user's todo count with a query of its own (the N+1 "
            "pattern): 50 users, 52 queries.",
            "Otel Lab - Overview / DB queries per request",
            "DatabaseQueriesPerRequestHigh",
        ),
        Fault(
            "worker-backlog",
            "worker",
            "Item enrichment takes 2 s per task on the worker, so tasks queue up faster than "
            "they are done.",
            "Otel Lab - Overview / Worker queue depth",
            "WorkerQueueBacklog",
        ),
        Fault(
            "memory-leak",
            "order-service",
            "order-service keeps 2 MiB per order in a list it never trims (up to 1 GiB; "
            "freed when the fault is switched off).",
            "Otel Lab - Overview / Memory (RSS) per service",
            "ProcessMemoryGrowing",
        ),
        Fault(
            "cpu-hungry",
            "api",
            "POST /analyze derives a key with 400,000 PBKDF2 rounds before answering: about "
            "0.1 s of CPU per request, in a thread (the alert needs a few requests a "
            "second: otel-lab load).",
            "Otel Lab - Overview / CPU per service",
            "HighCpuUsage",
        ),
        Fault(
            "weather-upstream",
            "weather-upstream",
            "The weather upstream answers after 0.4-1.2 s, and half of its answers are 503: "
            "the api retries, runs into its deadline and answers 502/504.",
            "Otel Lab - Enhanced tracing metrics / External API time p95 (API_OPERATION_TIME)",
            "High5xxRate",
            "otel-lab-enhanced-tracing",
        ),
        Fault(
            "chaos-delay",
            "every service",
            "Chaos mode without a restart: a share of every service's requests (CHAOS_RATE, "
            "5 %) waits CHAOS_MIN_DELAY_MS-CHAOS_MAX_DELAY_MS (100-200 ms).",
            "Otel Lab - MicroTrace (/analyze) / Chaos-delayed share",
            "SlowRequestShareHigh",
            "otel-lab-microtrace",
        ),
    )
}


def flags_path(settings: Settings) -> Path:
    """The flag file to switch: the one flagd's ``FLAGD_OFFLINE_FLAG_SOURCE_PATH`` names
    (read from the environment, as the flagd provider reads it), else the data dir's."""
    explicit = os.environ.get(PATH_ENV)
    return Path(explicit) if explicit else settings.data_dir / FILE_NAME


def _flag(on: bool, fault: Fault) -> JSONObject:
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on" if on else "off",
        "metadata": {"service": fault.service, "description": fault.description},
    }


def read_enabled(path: Path) -> set[str]:
    """The faults switched on in the flag file (none when it does not exist)."""
    try:
        flags = json.loads(path.read_text()).get("flags", {})
    except (OSError, ValueError):
        return set()
    return {name for name, flag in flags.items() if flag.get("defaultVariant") == "on"}


def left_on_notice(path: Path) -> str | None:
    """What ``otel-lab up`` says when faults are still on from an earlier run: the flag file
    outlives the processes, so a fault nobody switched off slows the next run unannounced."""
    enabled = read_enabled(path)
    if not enabled:
        return None
    names = ", ".join(name for name in FAULTS if name in enabled)
    return f"Fault scenarios still switched on from before: {names} (otel-lab fault off NAME)"


def write(enabled: set[str], path: Path) -> Path:
    """Write the flag file with these faults on (atomically: readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {name: _flag(name in enabled, fault) for name, fault in FAULTS.items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def switch(name: str, on: bool, path: Path) -> set[str]:
    if name not in FAULTS:
        raise KeyError(name)
    enabled = read_enabled(path)
    enabled = enabled | {name} if on else enabled - {name}
    write(enabled, path)
    return enabled


# ----------------------------------------------------------------------------- in services


class _Watcher:
    """Evaluates every fault flag through OpenFeature in the background."""

    def __init__(self) -> None:
        self.active: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            from openfeature import api
            from openfeature.contrib.provider.flagd import FlagdProvider
            from openfeature.contrib.provider.flagd.config import ResolverType

            if os.environ.get(SERVER_ENV):
                # Stack and cluster modes: a flagd server serves the flag file; the provider
                # reads FLAGD_RESOLVER (in-process: it syncs the flags over gRPC, port 8015,
                # and evaluates them here), FLAGD_HOST and FLAGD_SYNC_PORT itself.
                provider = FlagdProvider()
            elif os.environ.get(PATH_ENV):
                # Embedded mode: `otel-lab up` names the file of its data dir.
                path = Path(os.environ[PATH_ENV])
                if not path.exists():
                    with contextlib.suppress(OSError):
                        write(set(), path)
                provider = FlagdProvider(
                    resolver_type=ResolverType.IN_PROCESS, offline_flag_source_path=str(path)
                )
            else:
                # A service started on its own (a test, uvicorn by hand) follows no flag file:
                # a fault left on in some data dir must not slow it down unasked.
                return
            api.set_provider(provider)
            client = api.get_client("otel-lab-faults")
        except Exception:
            log.exception("fault flags unavailable; faults stay off")
            return
        while True:
            try:
                self.active = frozenset(
                    name for name in FAULTS if client.get_boolean_value(name, False)
                )
            except Exception:  # a half-written file, a provider hiccup: keep the last set
                log.debug("fault flag evaluation failed", exc_info=True)
            time.sleep(REFRESH_SECONDS)


_watcher = _Watcher()


def active(name: str) -> bool:
    """Whether the fault is on (a set lookup; the first call starts the watcher)."""
    if _watcher._thread is None:
        _watcher.start()
    return name in _watcher.active


def mark(span: Span, name: str) -> None:
    """Say on the span that a fault touched it."""
    span.set_attribute(ATTRIBUTE, name)
    span.add_event("fault", {ATTRIBUTE: name, "fault.description": FAULTS[name].description})


# ----------------------------------------------------------------------------- CLI

cli = typer.Typer(help="Fault scenarios: list them, switch one on or off (no restart).")
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="the data dir of `otel-lab up`")]
File = Annotated[
    Path | None,
    typer.Option("--file", help="a flag file (stack mode: deploy/flagd/flags.flagd.json)"),
]


def _path(data_dir: Path | None, file: Path | None = None) -> Path:
    """The options' file, else the settings' (read here: the command is an entry point)."""
    if file:
        return file
    if data_dir:
        return data_dir.expanduser().resolve() / FILE_NAME
    return flags_path(get_settings())


@cli.command("list")
def list_faults(data_dir: DataDir = None, file: File = None) -> None:
    """Every fault, whether it is on, what it does."""
    enabled = read_enabled(_path(data_dir, file))
    for fault in FAULTS.values():
        state = "ON " if fault.name in enabled else "off"
        typer.echo(f"{state}  {fault.name:<16} {fault.service:<16} {fault.description}")


@cli.command("on")
def fault_on(name: str, data_dir: DataDir = None, file: File = None) -> None:
    """Switch a fault on (the services notice within about a second)."""
    _switch(name, True, _path(data_dir, file))


@cli.command("off")
def fault_off(name: str, data_dir: DataDir = None, file: File = None) -> None:
    """Switch a fault off."""
    _switch(name, False, _path(data_dir, file))


def _switch(name: str, on: bool, path: Path) -> None:
    try:
        enabled = switch(name, on, path)
    except KeyError:
        typer.echo(f"unknown fault {name!r}; known: {', '.join(FAULTS)}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name} {'on' if on else 'off'}; active: {', '.join(sorted(enabled)) or 'none'}")
