"""``otel-lab console`` (also ``python -m otel_lab.console``, as ``otel-lab up`` starts it):
the OTLP/HTTP receiver and the UI/API in one process.

Every option overrides one setting of :class:`~otel_lab.settings.Settings`, so its default
is whatever the environment or ``.env`` says (then the setting's own default).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from typer.models import OptionInfo

from otel_lab.console.config import ConfigError, ConsoleConfig
from otel_lab.console.net import PortUnavailable, bind
from otel_lab.console.security import is_loopback
from otel_lab.settings import Settings

log = logging.getLogger("otel_lab.console")


def _opt(setting: str, help: str, *flags: str) -> OptionInfo:
    info: OptionInfo = typer.Option(*flags, help=f"{help}; setting {setting}", show_default=False)
    return info


def console(
    otlp_port: Annotated[
        int | None, _opt("CONSOLE_OTLP_PORT", "OTLP/HTTP port, 0 for a free one (4318)")
    ] = None,
    ui_port: Annotated[
        int | None, _opt("CONSOLE_UI_PORT", "UI and JSON API port, 0 for a free one (16686)")
    ] = None,
    host: Annotated[str | None, _opt("OTEL_LAB_HOST", "address to bind (127.0.0.1)")] = None,
    db: Annotated[
        Path | None, _opt("CONSOLE_DB", "SQLite file (<OTEL_LAB_DATA_DIR>/console/telemetry.db)")
    ] = None,
    max_pending_rows: Annotated[
        int | None,
        _opt("CONSOLE_MAX_PENDING_ROWS", "rows queued for the writer before OTLP gets 503"),
    ] = None,
    retention: Annotated[
        str | None,
        _opt("CONSOLE_RETENTION", "evict telemetry older than this: 24h, 7d, 90m, 0 for never"),
    ] = None,
    max_db_mb: Annotated[
        float | None,
        _opt("CONSOLE_MAX_DB_MB", "evict the oldest telemetry beyond this size, 0 for no cap"),
    ] = None,
    token: Annotated[
        str | None,
        _opt("CONSOLE_TOKEN", "require 'Authorization: Bearer TOKEN' for OTLP and the UI/API"),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow binding a non-loopback address without a token.")
    ] = False,
    sql_timeout: Annotated[
        float | None, _opt("CONSOLE_SQL_TIMEOUT", "time limit of a statement on the SQL page")
    ] = None,
    scrape: Annotated[
        str | None,
        _opt("CONSOLE_SCRAPE_TARGETS", "scrape these /metrics endpoints: job=url,job=url"),
    ] = None,
    scrape_interval: Annotated[
        float | None, _opt("CONSOLE_SCRAPE_INTERVAL", "seconds between scrapes, 0 for none")
    ] = None,
    rules_interval: Annotated[
        float | None,
        _opt("CONSOLE_RULES_INTERVAL", "seconds between evaluations of the alert rules"),
    ] = None,
    log_level: Annotated[str | None, _opt("LOG_LEVEL", "log level (INFO)")] = None,
) -> None:
    """Run the telemetry console: OTLP/HTTP receiver, UI and JSON API (docs/console.md)."""
    overrides: dict[str, Any] = {  # Settings(**values) takes any
        "CONSOLE_OTLP_PORT": otlp_port,
        "CONSOLE_UI_PORT": ui_port,
        "OTEL_LAB_HOST": host,
        "CONSOLE_DB": db,
        "CONSOLE_MAX_PENDING_ROWS": max_pending_rows,
        "CONSOLE_RETENTION": retention,
        "CONSOLE_MAX_DB_MB": max_db_mb,
        "CONSOLE_TOKEN": token,
        "CONSOLE_SQL_TIMEOUT": sql_timeout,
        "CONSOLE_SCRAPE_TARGETS": scrape,
        "CONSOLE_SCRAPE_INTERVAL": scrape_interval,
        "CONSOLE_RULES_INTERVAL": rules_interval,
        "LOG_LEVEL": log_level,
    }
    _configure_logging(log_level or "INFO")
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        _fail(2, f"invalid setting: {exc.errors()[0]['msg']} ({_names(exc)})")
    logging.getLogger().setLevel(settings.log_level.upper())
    try:
        config = ConsoleConfig.from_settings(settings)
    except ConfigError as exc:
        _fail(2, str(exc))
    run(config, insecure=insecure)


def run(config: ConsoleConfig, *, insecure: bool = False) -> None:
    """Refuse an exposed console without a token, bind both ports, then serve."""
    if not is_loopback(config.host) and not config.token and not insecure:
        _fail(
            2,
            f"refusing to listen on {config.host} without a token: anyone who can reach it "
            "could read (and clear) your telemetry. Set --token or CONSOLE_TOKEN, or pass "
            "--insecure if the network is trusted.",
        )
    # Bind first: a taken port fails in a fraction of a second, before the heavy imports.
    try:
        sockets = (bind(config.host, config.otlp_port), bind(config.host, config.ui_port))
    except PortUnavailable as exc:
        _fail(1, str(exc))
    from otel_lab.console import server

    server.run(config, sockets)


def _names(exc: ValidationError) -> str:
    return ", ".join(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))


def _fail(code: int, message: str) -> NoReturn:
    log.error("otel-lab console: %s", message)
    raise typer.Exit(code)


def _configure_logging(level: str) -> None:
    """JSON lines on stderr, as the services write them (not exported: this is the
    endpoint the exporters send to)."""
    from otel_lab.telemetry.logs import configure_logging

    configure_logging("console", level, None)
    # Two servers in one process would log every start/stop line twice.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def main() -> None:
    """``python -m otel_lab.console``: the same command on its own."""
    typer.run(console)
