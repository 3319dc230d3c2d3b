"""CPU per request of the services' HTTP protocol (``otel_lab.http_protocol``), paired
against another checkout's.

Two measurements, each alternating the two versions round by round so both see the same
load on a shared machine:

- over sockets: a trivial ASGI app served with ``--http
  otel_lab.http_protocol:JsonErrorsProtocol`` twice, once with each checkout's code
  (``PYTHONPATH=<checkout>/src``), driven by wrk in turns (keep-alive ``GET /health``); CPU
  is utime + stime of each server from ``/proc/<pid>/stat`` per request. The whole server's
  cost, so a difference of a microsecond is within its noise.
- in process: both versions of the class in this process, fed the same request (a typical
  client's eight headers) once per read, the ASGI task start stubbed out: the protocol's
  own work per request (parsing, the scope, the limits), without sockets or the event loop.
  Process CPU time; the minimum over rounds is the figure least disturbed by other load.

    .venv/bin/python scripts/bench_protocol.py --baseline /work/main
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import TRIVIAL_APP, cpu_seconds, wrk
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.server import ServerState

from otel_lab.registry import HTTP_PROTOCOL
from otel_lab.runtime.harness import free_ports

HERE = Path(__file__).resolve().parent.parent
REQUEST = (
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: python-httpx/0.28.1\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    b"X-Request-ID: 5f1c2a9e-8d1b-4c6a-9e43-3b2f0c7d1a55\r\nContent-Length: 0\r\n\r\n"
)


def serve(checkout: Path, port: int, app_dir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(app_dir),
               "--port", str(port), "--http", HTTP_PROTOCOL, "--log-level", "warning",
               "--no-access-log"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.1)


def over_sockets(checkouts: dict[str, Path], rounds: int, duration: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory(prefix="otel-lab-protocol-") as tmp:
        (Path(tmp) / "app.py").write_text(TRIVIAL_APP)
        ports = dict(zip(checkouts, free_ports(len(checkouts)), strict=True))
        servers = {name: serve(path, ports[name], Path(tmp)) for name, path in checkouts.items()}
        try:
            for round_ in range(-1, rounds):  # round -1: warm-up
                order = list(checkouts)[:: 1 if round_ % 2 else -1]
                for name in order:
                    pid = servers[name].pid
                    before = cpu_seconds(pid)
                    url = f"http://127.0.0.1:{ports[name]}/health"
                    run = wrk(url, duration=duration, connections=4, tmp=Path(tmp))
                    if round_ >= 0:
                        us = (cpu_seconds(pid) - before) * 1e6 / run.requests
                        results[name].append(us)
                        print(f"sockets round {round_} {name:8} {us:6.1f} us/request"
                              f" {run.requests / run.seconds:6.0f} req/s non-2xx {run.non_2xx}"
                              f" load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(5)
    return results


class _Transport(asyncio.Transport):
    def is_closing(self) -> bool:
        return False

    def write(self, data: Any) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


def _protocol(checkout: Path, name: str, loop: asyncio.AbstractEventLoop) -> Any:
    """``checkout``'s protocol class, connected to a transport that drops what it is given."""
    spec = importlib.util.spec_from_file_location(name, checkout / "src/otel_lab/http_protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bench = type(name, (module.JsonErrorsProtocol,), {"_start_asgi_task": lambda *_: None})
    config = Config(app=_app, log_level="warning")
    config.load()
    protocol = bench(config, ServerState(), {}, loop)
    protocol.transport = _Transport()
    protocol.flow = FlowControl(protocol.transport)
    protocol.server, protocol.client = ("127.0.0.1", 8000), ("127.0.0.1", 1)
    protocol.scheme = "http"
    return protocol


def in_process(checkouts: dict[str, Path], rounds: int, requests: int) -> dict[str, list[float]]:
    loop = asyncio.new_event_loop()
    protocols = {name: _protocol(path, f"bench_{name}", loop) for name, path in checkouts.items()}
    results: dict[str, list[float]] = {name: [] for name in checkouts}
    for round_ in range(-1, rounds):  # round -1: warm-up
        for name in list(checkouts)[:: 1 if round_ % 2 else -1]:
            protocol = protocols[name]
            started = time.process_time()
            for _ in range(requests):
                protocol.data_received(REQUEST)
                protocol.cycle.response_complete = True  # as if answered: no pipelining
            if round_ >= 0:
                results[name].append((time.process_time() - started) / requests * 1e6)
    loop.close()
    return results


def report(what: str, results: dict[str, list[float]]) -> None:
    deltas = [new - old for new, old in zip(results["this"], results["baseline"], strict=True)]
    for name, values in results.items():
        print(f"{what}: {name:8} median {statistics.median(values):6.2f}"
              f" min {min(values):6.2f} us/request")  # fmt: skip
    print(f"{what}: this - baseline: median of paired differences"
          f" {statistics.median(deltas):+.2f} us, difference of minimums"
          f" {min(results['this']) - min(results['baseline']):+.2f} us"
          f" (load {os.getloadavg()[0]:.1f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=Path("/work/main"))
    parser.add_argument("--rounds", type=int, default=6, help="wrk runs per version")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--in-process-rounds", type=int, default=30)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    checkouts = {"baseline": args.baseline.resolve(), "this": HERE}
    print(f"baseline {checkouts['baseline']}, this {HERE}")
    report("in process", in_process(checkouts, args.in_process_rounds, 30_000))
    report("over sockets", over_sockets(checkouts, args.rounds, args.duration))


if __name__ == "__main__":
    main()
