"""``python -m otel_lab.console``: start the OTLP/HTTP receiver and the UI/API."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from otel_lab.console.net import bind
from otel_lab.settings import get_settings


def _retention(value: str) -> float | None:
    """``24h``, ``7d``, ``90m``, seconds; ``0`` or ``off`` keeps data until the size cap."""
    from otel_lab.console.queries import QueryError, parse_duration_seconds

    if value.strip().lower() in ("0", "off", "none", "forever"):
        return None
    try:
        seconds = parse_duration_seconds(value, "--retention")
    except QueryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds or None


def _targets(value: str) -> tuple[Any, ...]:
    from otel_lab.console.scrape import parse_targets

    try:
        return tuple(parse_targets(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _is_loopback(host: str) -> bool:
    from otel_lab.console.security import is_loopback

    return is_loopback(host)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m otel_lab.console",
        description="Otel Lab telemetry console: OTLP/HTTP receiver plus JSON API and UI.",
    )
    parser.add_argument(
        "--otlp-port",
        type=int,
        default=settings.console_otlp_port,
        help="OTLP/HTTP port (env CONSOLE_OTLP_PORT, default 4318; 0 picks a free port)",
    )
    parser.add_argument(
        "--ui-port",
        type=int,
        default=settings.console_ui_port,
        help="UI and JSON API port (env CONSOLE_UI_PORT, default 16686; 0 picks a free port)",
    )
    parser.add_argument(
        "--host",
        default=settings.host,
        help="address to bind (env OTEL_LAB_HOST, default 127.0.0.1)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=settings.data_dir / "console" / "telemetry.db",
        help="SQLite file (default <OTEL_LAB_DATA_DIR or .otel-lab>/console/telemetry.db)",
    )
    parser.add_argument(
        "--max-pending-rows",
        type=int,
        default=100_000,
        help="rows queued for the writer before the receiver answers 503 (default 100000)",
    )
    parser.add_argument(
        "--retention",
        type=_retention,
        default=_retention(settings.console_retention),
        help="evict telemetry older than this: 24h, 7d, 90m, or 0 for no time limit "
        "(env CONSOLE_RETENTION, default 24h)",
    )
    parser.add_argument(
        "--max-db-mb",
        type=float,
        default=settings.console_max_db_mb,
        help="evict the oldest telemetry beyond this database size in MB, 0 for no cap "
        "(env CONSOLE_MAX_DB_MB, default 1024)",
    )
    parser.add_argument(
        "--token",
        default=settings.console_token,
        help="require 'Authorization: Bearer TOKEN' for OTLP and the UI/API (env CONSOLE_TOKEN)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without a token",
    )
    parser.add_argument(
        "--sql-timeout",
        type=float,
        default=5.0,
        help="time limit in seconds for a statement on the SQL page (default 5)",
    )
    parser.add_argument(
        "--scrape",
        type=_targets,
        default=_targets(settings.console_scrape_targets),
        help="scrape these /metrics endpoints like Prometheus: job=url,job=url "
        "(env CONSOLE_SCRAPE_TARGETS; `otel-lab up` passes every service)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=settings.console_scrape_interval,
        help="seconds between scrapes, 0 for none (env CONSOLE_SCRAPE_INTERVAL, default 10)",
    )
    parser.add_argument(
        "--rules-interval",
        type=float,
        default=settings.console_rules_interval,
        help="seconds between evaluations of the alert rules (env CONSOLE_RULES_INTERVAL, "
        "default 15)",
    )
    parser.add_argument(
        "--log-level",
        default=settings.log_level,
        help="log level (env LOG_LEVEL, default INFO)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # Two servers in one process would log every start/stop line twice.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    if not _is_loopback(args.host) and not args.token and not args.insecure:
        print(
            f"otel-lab console: refusing to listen on {args.host} without a token: anyone who "
            "can reach it could read (and clear) your telemetry. Set --token or CONSOLE_TOKEN, "
            "or pass --insecure if the network is trusted.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # Bind first: a taken port fails in a fraction of a second, before the heavy imports.
    sockets = (bind(args.host, args.otlp_port), bind(args.host, args.ui_port))
    from otel_lab.console.server import ConsoleConfig, run

    run(
        ConsoleConfig(
            host=args.host,
            otlp_port=args.otlp_port,
            ui_port=args.ui_port,
            db_path=args.db,
            max_pending_rows=args.max_pending_rows,
            retention_seconds=args.retention,
            max_db_bytes=int(args.max_db_mb * 1024 * 1024) if args.max_db_mb > 0 else None,
            token=args.token,
            sql_timeout=args.sql_timeout,
            scrape_targets=args.scrape,
            scrape_interval=args.scrape_interval,
            rules_interval=args.rules_interval,
        ),
        sockets,
    )


if __name__ == "__main__":
    main()
