"""Run the receiver and the API in one process: two uvicorn servers on one event loop.

One loop keeps the process small and start-up fast; the CPU-heavy parts (decoding in the
receiver, SQLite writes in the writer thread, queries in the API's thread pool) are
arranged so that neither port waits for the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from otel_lab.console.api import create_app
from otel_lab.console.net import bind, url_of
from otel_lab.console.receiver import OtlpHttpProtocol, OtlpReceiver
from otel_lab.console.store import Store

log = logging.getLogger("otel_lab.console")


@dataclass(frozen=True)
class ConsoleConfig:
    host: str
    otlp_port: int
    ui_port: int
    db_path: Path
    max_pending_rows: int = 100_000


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (two servers share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    config: ConsoleConfig, sockets: tuple[socket.socket, socket.socket] | None = None
) -> None:
    """Serve until stopped; ``sockets`` (OTLP, UI) may be bound already by the caller."""
    otlp_sock, ui_sock = sockets or (
        bind(config.host, config.otlp_port),
        bind(config.host, config.ui_port),
    )
    otlp_url, ui_url = url_of(config.host, otlp_sock), url_of(config.host, ui_sock)
    store = Store(config.db_path, max_pending_rows=config.max_pending_rows)
    try:
        common = {"log_config": None, "server_header": False, "timeout_graceful_shutdown": 5}
        servers = [
            _Server(
                uvicorn.Config(
                    OtlpReceiver(store, ui_url=ui_url),
                    http=OtlpHttpProtocol,
                    ws="none",
                    lifespan="off",
                    access_log=False,
                    **common,
                )
            ),
            _Server(
                uvicorn.Config(
                    create_app(store, otlp_url=otlp_url),
                    lifespan="on",
                    access_log=False,
                    **common,
                )
            ),
        ]

        def stop() -> None:
            for server in servers:
                if server.should_exit:
                    server.force_exit = True
                server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        tasks = [
            asyncio.create_task(servers[0].serve(sockets=[otlp_sock])),
            asyncio.create_task(servers[1].serve(sockets=[ui_sock])),
        ]
        while not all(s.started for s in servers) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.005)
        if all(s.started for s in servers):
            # One line on stdout that launchers (and the test fixture) wait for and parse.
            print(
                f"otel-lab console: OTLP/HTTP on {otlp_url}, UI and API on {ui_url}, "
                f"store {config.db_path}",
                flush=True,
            )
        else:
            stop()
        await asyncio.gather(*tasks)
    finally:
        store.close()
        otlp_sock.close()
        ui_sock.close()
        log.info("console stopped; store closed")


def run(config: ConsoleConfig, sockets: tuple[socket.socket, socket.socket] | None = None) -> None:
    """Run until SIGINT/SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, sockets))
    sys.stdout.flush()
