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
from typing import TypedDict

import uvicorn

from otel_lab.console.api import ApiOptions, create_app
from otel_lab.console.config import ConsoleConfig
from otel_lab.console.net import bind, url_of
from otel_lab.console.promapi import PromState, rules_runner
from otel_lab.console.receiver import OtlpHttpProtocol, OtlpReceiver
from otel_lab.console.scrape import Scraper
from otel_lab.console.security import Security
from otel_lab.console.store import Store
from otel_lab.http_protocol import JsonErrorsProtocol

log = logging.getLogger("otel_lab.console")


class _ServerOptions(TypedDict):
    """What both of the console's uvicorn servers are configured with."""

    log_config: None
    server_header: bool
    timeout_graceful_shutdown: int


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
    store = Store(
        config.db_path,
        max_pending_rows=config.max_pending_rows,
        retention_seconds=config.retention_seconds,
        max_db_bytes=config.max_db_bytes,
    )
    prom = PromState(deploy=config.deploy_dir)
    if config.scrape_targets and config.scrape_interval > 0:
        prom.scraper = Scraper(store, config.scrape_targets, config.scrape_interval)
    if (prom.deploy / "prometheus" / "rules").is_dir():
        prom.rules = rules_runner(
            store, prom.deploy, config.rules_interval, config.slow_rules_interval
        )
    options = ApiOptions(
        otlp_url=otlp_url,
        security=Security(token=config.token, bind_host=config.host),
        sql_timeout=config.sql_timeout,
        prom=prom,
        flags_file=config.flags_file,
    )
    try:
        common: _ServerOptions = {
            "log_config": None,
            "server_header": False,
            "timeout_graceful_shutdown": 5,
        }
        servers = [
            _Server(
                uvicorn.Config(
                    OtlpReceiver(store, ui_url=ui_url, token=config.token),
                    http=OtlpHttpProtocol,
                    ws="none",
                    lifespan="off",
                    access_log=False,
                    **common,
                )
            ),
            _Server(
                uvicorn.Config(
                    create_app(store, options=options),
                    http=JsonErrorsProtocol,
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
            for worker in (prom.scraper, prom.rules):
                if worker is not None:
                    worker.start()
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
        for worker in (prom.scraper, prom.rules):
            if worker is not None:
                worker.stop()
        store.close()
        otlp_sock.close()
        ui_sock.close()
        log.info("console stopped; store closed")


def run(config: ConsoleConfig, sockets: tuple[socket.socket, socket.socket] | None = None) -> None:
    """Run until SIGINT/SIGTERM, on uvloop when it is installed."""
    # The event loop, decoding threads and the writer share the GIL. Python's default 5 ms
    # switch interval lets a decode or a commit hold the loop up to 5 ms per hand-off; 1 ms
    # took the OTLP acknowledgement p99 from about 60 ms to under 50 ms at the same
    # throughput in scripts/bench_console.py.
    sys.setswitchinterval(config.switch_interval)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, sockets))
    sys.stdout.flush()
