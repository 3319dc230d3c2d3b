"""Start ``python -m module ...`` children by forking a process that has already imported
what they share.

Every service imports FastAPI, pydantic, SQLAlchemy, psycopg, uvicorn and the
OpenTelemetry SDK: about a second of CPU each, eight times over on two cores, which was
most of what ``otel-lab up`` spent getting ready. The fork server imports those libraries
once (:data:`PRELOAD`: libraries and our own modules that do nothing at import) and forks
each child from there, so a child only imports and runs its own module.

A forked child is what ``python -m module args`` would be: its own session and log file,
the environment it was given, ``sys.argv``, ``__main__``, atexit handlers and exit code.
What an interpreter reads from the environment only at start-up (``PYTHON*`` variables)
must be the fork server's; a child whose differ, or that is not ``python -m``, is started
with exec as before (see :func:`otel_lab.runtime.procs.spawn`).

The children are the fork server's, not the supervisor's: it reports each one's exit code
over its stdout, and :class:`ForkedProcess` offers what the supervisor uses of a
``subprocess.Popen`` (``pid``, ``poll``, ``wait``, ``send_signal``, ``returncode``).
Signals go to the child directly. Each child gets its death signal when the fork server
dies, and the fork server gets SIGKILL when the supervisor dies, as exec'd children do.

Protocol: one JSON object per line. Supervisor -> server: ``{"module", "args", "env",
"cwd", "log", "death_signal"}``. Server -> supervisor: ``{"ready": true}`` once preloaded,
then ``{"pid": N}`` or ``{"error": "..."}`` per request, and ``{"exit": N, "code": C}``
when a child ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

# What the services, the worker and the console import; each must do nothing at import
# but define things (no settings read, no threads, no sockets), since every child shares it.
PRELOAD: tuple[str, ...] = (
    "uvicorn.main",
    "uvicorn.protocols.http.httptools_impl",
    "otel_lab.http_protocol",
    "uvicorn.lifespan.on",
    "fastapi",
    "fastapi_offline",
    "pydantic.v1",  # FastAPI imports it while it builds an app
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql.psycopg",
    "psycopg",
    "redis.asyncio",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk._logs",
    "opentelemetry.instrumentation.celery",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "celery",  # the api publishes, the worker consumes
    "kombu.transport.redis",
    "otel_lab.telemetry",
    "otel_lab.telemetry.database",
    "otel_lab.http_client",
    "otel_lab.telemetry.http_client",
    "otel_lab.services.base",
    "otel_lab.services.downstream",
)
PR_SET_PDEATHSIG = 1
# Variables an interpreter reads only when it starts: a child forked from a server that
# started with other values would not be what ``python -m`` gives.
_STARTUP_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONSAFEPATH",
                      "PYTHONOPTIMIZE", "PYTHONDONTWRITEBYTECODE", "PYTHONDEVMODE",
                      "PYTHONWARNINGS", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONNOUSERSITE",
                      "PYTHONUNBUFFERED", "PYTHONMALLOC", "PYTHONFAULTHANDLER",
                      "PYTHONTRACEMALLOC", "PYTHONPROFILEIMPORTTIME", "PYTHONINSPECT",
                      "PYTHONVERBOSE", "PYTHONDEBUG")  # fmt: skip


# -- the fork server ------------------------------------------------------------------------


class SpawnRequest(TypedDict):
    """Supervisor -> server: run ``python -m module args`` (a JSON line, see above)."""

    module: str
    args: list[str]
    env: dict[str, str]
    cwd: str | None
    log: str
    death_signal: int | None


def _send(message: Mapping[str, object]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _show_command_line(argv: Sequence[str]) -> None:
    """Make ``ps`` (``/proc/<pid>/cmdline``) show the child's own command, not the server's.

    The kernel reads the command line from the process's original argv memory, which a
    fork inherits: overwrite it in place (as setproctitle does), cut to its length. The
    server's command line lists :data:`PRELOAD`, so it is long enough for any of ours.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        text = "\0".join(argv).encode(errors="replace")[: end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            memory.write(text.ljust(end - start, b"\0"))


def _run_child(request: SpawnRequest, server_pid: int) -> None:
    """In the forked child: become ``python -m module args`` and never return."""
    code: int = 1
    try:
        os.setsid()
        _show_command_line([sys.executable, "-m", request["module"], *request["args"]])
        death_signal = request.get("death_signal")
        if death_signal:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
            if os.getppid() != server_pid:  # the server died before the flag was set
                os._exit(1)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        if cwd := request.get("cwd"):
            os.chdir(cwd)
        os.environ.clear()
        os.environ.update(request["env"])
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        sys.path[0] = os.getcwd()  # as for ``python -m``: the working directory first
        sys.argv = [request["module"], *request["args"]]
        import runpy

        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # What the interpreter does at exit: join threads, atexit handlers (telemetry
        # flushes there), flush stdio.
        with contextlib.suppress(BaseException):
            import threading

            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _serve(preload: Sequence[str]) -> None:
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the child imports it itself and fails there, visibly
            print(f"fork server: preloading {name} failed: {exc!r}", file=sys.stderr)
    # Everything alive now stays shared: frozen, the children's collections never walk (and
    # so never copy) it (the ``gc.freeze`` documentation's recipe for fork without exec).
    gc.collect()
    gc.freeze()
    server_pid = os.getpid()
    _send({"ready": True})
    buffer = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if readable:
            data = os.read(0, 65536)
            if not data:
                return  # the supervisor closed our stdin: it is stopping
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request: SpawnRequest = json.loads(line)  # ForkServer.spawn wrote it
                try:
                    pid = os.fork()
                except OSError as exc:
                    _send({"error": repr(exc)})
                    continue
                if pid == 0:
                    _run_child(request, server_pid)
                _send({"pid": pid})
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


# -- the supervisor's side ------------------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, with the part of ``subprocess.Popen`` the runtime uses.

    Its pid is known once the server has forked it (after preloading): asking for it
    blocks until then, :meth:`poll` does not.
    """

    def __init__(self, server: ForkServer, args: Sequence[str]) -> None:
        self.server, self.args = server, list(args)
        self._pid: int | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        while self._pid is None and self.returncode is None:
            self.server.collect(wait=0.05)
        return self._pid if self._pid is not None else -1

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        pid = self.pid
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """The supervisor's handle on a fork server process (``python -m`` this module)."""

    def __init__(self, log_path: Path, preload: Sequence[str] = PRELOAD) -> None:
        from otel_lab.runtime.procs import death_signal_prefix, rotate_log

        rotate_log(log_path)
        # Children get PYTHONUNBUFFERED=1 (their logs reach the file as they happen), so the
        # server starts with it too.
        self.environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*death_signal_prefix(signal.SIGKILL), sys.executable, "-m", __name__, *preload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=self.environment, start_new_session=True,
            )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buffer = b""
        self._pending: list[ForkedProcess] = []  # asked for, pid not known yet
        self._children: dict[int, ForkedProcess] = {}

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def can_fork(self, argv: Sequence[str], env: Mapping[str, str] | None) -> bool:
        """``python -m module ...`` with the interpreter's start-up variables unchanged."""
        if len(argv) < 3 or argv[0] != sys.executable or argv[1] != "-m" or not self.alive:
            return False
        env = self.environment if env is None else env
        return all(env.get(name) == self.environment.get(name) for name in _STARTUP_VARIABLES)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None,
        cwd: Path | None,
        death_signal: signal.Signals | None,
    ) -> ForkedProcess:
        """Ask the server to fork ``argv`` (see :meth:`can_fork`); returns at once, also
        while the server is still preloading."""
        request: SpawnRequest = {
            "module": argv[2],
            "args": list(argv[3:]),
            "env": dict(self.environment if env is None else env),
            "cwd": str(cwd) if cwd else None,
            "log": str(log_path),
            "death_signal": int(death_signal) if death_signal else None,
        }
        log_path.touch()  # there at once, as for an exec'd child (the fork comes later)
        os.write(self._in, (json.dumps(request) + "\n").encode())
        child = ForkedProcess(self, argv)
        self._pending.append(child)
        return child

    def collect(self, wait: float = 0) -> None:
        """Read what the server reported (forks, exits); if it died, so did its children."""
        if wait:
            select.select([self._out], [], [], wait)
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._out, 65536):
                self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            if "pid" in message or "error" in message:  # answers come in request order
                child = self._pending.pop(0)
                if "pid" in message:
                    child._pid = int(message["pid"])
                    self._children[child._pid] = child
                else:
                    print(f"fork server: {message['error']}", file=sys.stderr)
                    child.returncode = 1
            elif "exit" in message:
                exited = self._children.pop(int(message["exit"]), None)
                if exited is not None:
                    exited.returncode = int(message["code"])
        if not self.alive:
            for child in [*self._pending, *self._children.values()]:
                if child.returncode is None and (child._pid is None or not _exists(child._pid)):
                    child.returncode = -signal.SIGKILL

    def close(self) -> None:
        """Stop the server now (its children, if any are left, get their death signal);
        it may still be preloading, and then would not read a polite request."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.terminate()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    _serve(sys.argv[1:])
