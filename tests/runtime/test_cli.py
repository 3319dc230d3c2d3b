"""`otel-lab up` as a real process: it gets ready, prints its table, and leaves nothing
behind when stopped; a taken port or a failing step stops it quickly with a clear message."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
import redis

from otel_lab.db import WARM_CONNECTIONS
from otel_lab.registry import API, AUDIT, ORDERS, SERVICES, USERS
from otel_lab.runtime.harness import running_system
from otel_lab.runtime.plan import setting_name
from otel_lab.runtime.procs import free_port
from tests.runtime.conftest import run_up_to_exit


def _names(procs: list[psutil.Process]) -> set[str]:
    names = set()
    for proc in procs:
        try:
            names.add(proc.name())
            names.update(Path(arg).name for arg in proc.cmdline()[:4])
        except psutil.Error:
            pass
    return names


def test_up_gets_ready_and_sigterm_leaves_no_process(up_env: dict[str, str]) -> None:
    data_dir = Path(up_env["OTEL_LAB_DATA_DIR"])
    services = SERVICES
    with running_system(data_dir, env=up_env, timeout=90) as system:
        output = system.output()
        assert "otel-lab is up" in output
        for name in ("postgres", "valkey", *(s.name for s in services)):
            assert name in system.children, output
            assert f"logs/{name}.log" in output  # the table shows each log file

        # Ready means warm: before any request, each service that uses PostgreSQL holds its
        # pool's first connections (a first chain used to pay a connect on every hop).
        pg_port = urlsplit(system.database_url).port
        for service in (API, USERS, ORDERS, AUDIT):
            held = [
                c
                for c in psutil.Process(system.pid(service.name)).net_connections("tcp")
                if c.raddr and c.raddr.port == pg_port and c.status == psutil.CONN_ESTABLISHED
            ]
            assert len(held) >= WARM_CONNECTIONS, (service.name, held)

        # The datastores are real and the application database exists.
        with psycopg.connect(system.database_url.replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("otel_lab",)
        assert redis.Redis.from_url(system.redis_url).ping()
        for service in services:
            with urllib.request.urlopen(system.url(service.name) + service.health_path) as r:
                assert r.status == 200

        # `otel-lab status` sees the same run.
        status = subprocess.run(
            [sys.executable, "-m", "otel_lab.runtime.cli", "status"],
            env=up_env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout and "gone" not in status.stdout

        tree = system.processes()
        names = _names(tree)
        assert {"postgres", "valkey-server", "uvicorn", "celery"} <= names, names
        assert len(tree) > 3

        started = time.monotonic()
        code = system.stop()
        elapsed = time.monotonic() - started

    assert code == 0, system.output()
    assert elapsed < 12, f"shutdown took {elapsed:.1f} s"
    survivors = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, [(p.pid, p.cmdline()) for p in survivors]
    assert not (data_dir / "run.json").exists()
    assert json.loads((data_dir / "ports.json").read_text()).keys() == {"postgres", "valkey"}


def test_port_taken_fails_fast_naming_the_setting(up_env: dict[str, str]) -> None:
    for setting in {setting_name(SERVICES[0].port_field), "OTEL_LAB_POSTGRES_PORT"}:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            started = time.monotonic()
            done = run_up_to_exit({**up_env, setting: str(port)}, timeout=30)
            elapsed = time.monotonic() - started
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert f"port {port}" in output and f"set {setting} to a free port" in output, output
        assert "starting" not in output  # checked before anything started
        assert elapsed < 15


def test_failing_step_stops_everything_and_shows_its_log(up_env: dict[str, str]) -> None:
    # External mode with a database nobody listens on: the migrations (or, without them,
    # the first service) fail; `up` must say which, show the log, and exit non-zero.
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/otel_lab"
    done = run_up_to_exit({**up_env, "DATABASE_URL": dead}, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "PostgreSQL: external (DATABASE_URL)" in output
    assert "error:" in output and "last " in output and "lines of" in output, output
    assert "stopped valkey" in output  # what had started was stopped


def test_second_up_on_same_data_dir_is_refused(up_env: dict[str, str]) -> None:
    data_dir = Path(up_env["OTEL_LAB_DATA_DIR"])
    from otel_lab.runtime.embedded import EmbeddedPostgres

    with EmbeddedPostgres(data_dir):
        done = run_up_to_exit(up_env, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "in use by another process" in output and "--data-dir" in output


def test_sigint_during_startup_stops_cleanly(up_env: dict[str, str]) -> None:
    out = Path(up_env["OTEL_LAB_DATA_DIR"]).parent / "up.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_lab.runtime.cli", "up", "--no-traffic"],
            env=up_env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "ready valkey" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
