"""What the benchmark scripts share: CPU time of a process, one wrk run, a trivial endpoint.

CPU time is read from ``/proc/<pid>/stat`` (utime + stime, as ``top`` counts it), so a
figure is the process under test's own work, next to the throughput wrk reports.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _stat(pid: int, task: int | None = None) -> list[str]:
    """The fields of /proc/<pid>/stat (or of one thread's) after the command name, which
    may hold spaces: index 0 is field 3 of proc(5)."""
    where = f"/proc/{pid}/task/{task}" if task is not None else f"/proc/{pid}"
    stat = Path(f"{where}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """utime + stime of one process (fields 14 and 15 of /proc/<pid>/stat), or of one of
    its threads (``task``: the thread id)."""
    fields = _stat(pid, task)
    return (int(fields[11]) + int(fields[12])) / TICKS


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (field 10 of /proc/<pid>/stat): memory the
    kernel maps on first touch, about 3.5 us each on this kind of VM. A process that keeps
    mapping and unmapping memory (large buffers, short-lived greenlets' frame stacks) pays
    them on every request."""
    return int(_stat(pid)[7])


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float  # as wrk measured it
    non_2xx: int


def wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    tmp: Path,
    method: str | None = None,
    body: str | None = None,
) -> WrkResult:
    """One wrk run (one thread) against ``url``: a GET, or with a body a POST of that JSON."""
    method = method or ("GET" if body is None else "POST")
    extra: list[str] = []
    if method != "GET" or body is not None:
        script = tmp / f"{method.lower()}-{abs(hash(body))}.lua"
        script.write_text(
            f'wrk.method = "{method}"\nwrk.body = [[{body or ""}]]\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        extra = ["-s", str(script)]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", *extra, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * _UNITS[done.group(3)],
        non_2xx=int(errors.group(1)) if errors else 0,
    )


TRIVIAL_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok": true}'})
"""


@contextlib.contextmanager
def trivial_endpoint(port: int) -> Iterator[str]:
    """A uvicorn endpoint in a child process that reads any request and answers ``{"ok":
    true}`` (so a client benchmark counts only the client); yields its URL once it answers."""
    serve = f"import uvicorn; uvicorn.run(app, port={port}, log_level='warning', access_log=False)"
    server = subprocess.Popen([sys.executable, "-c", TRIVIAL_APP + "\n" + serve])
    url = f"http://127.0.0.1:{port}/call"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(5)
