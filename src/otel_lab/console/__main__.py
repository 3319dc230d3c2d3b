"""``python -m otel_lab.console``: start the OTLP/HTTP receiver and the UI/API."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from otel_lab.console.net import bind
from otel_lab.settings import get_settings


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
        ),
        sockets,
    )


if __name__ == "__main__":
    main()
