"""Embedded PostgreSQL and Valkey: real servers that answer, keep data, and stop cleanly."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from otel_lab.runtime.embedded import (
    DataDirInUseError,
    EmbeddedPostgres,
    EmbeddedValkey,
    embedded_postgres,
    embedded_valkey,
)
from otel_lab.runtime.procs import PortInUseError, free_port


def test_session_fixtures_answer(embedded_pg: EmbeddedPostgres, embedded_kv: EmbeddedValkey):
    with psycopg.connect(embedded_pg.dsn) as conn:
        assert conn.execute("SELECT current_database(), 1").fetchone() == ("otel_lab", 1)
    assert embedded_pg.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert redis.Redis.from_url(embedded_kv.url).ping() is True
    assert embedded_kv.url == f"redis://127.0.0.1:{embedded_kv.port}/0"


def test_postgres_keeps_rows_and_port_across_restart(tmp_path: Path) -> None:
    with embedded_postgres(tmp_path) as pg:
        first_port, first_pid = pg.port, pg.pid
        if os.geteuid() == 0:  # PostgreSQL refuses root; it runs as its own user
            assert psutil.Process(first_pid).username() == "embedded_postgres"
        with pg.connect() as conn:
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes VALUES (1, 'kept')")
    assert not psutil.pid_exists(first_pid)

    started = time.monotonic()
    with embedded_postgres(tmp_path) as pg:
        assert time.monotonic() - started < 5  # an existing cluster starts in well under 1 s
        assert pg.port == first_port  # remembered in ports.json, so URLs stay the same
        with pg.connect() as conn:
            assert conn.execute("SELECT body FROM notes WHERE id = 1").fetchone() == ("kept",)


def test_valkey_keeps_a_queue_across_restart_and_crash(tmp_path: Path) -> None:
    with embedded_valkey(tmp_path) as kv:
        client = redis.Redis.from_url(kv.url)
        client.rpush("celery", "task-1", "task-2")
        port = kv.port
        kv.restart()  # SIGTERM: Valkey fsyncs the append-only file
        assert kv.port == port
        assert client.lrange("celery", 0, -1) == [b"task-1", b"task-2"]

        client.rpush("celery", "task-3")
        time.sleep(1.2)  # appendfsync everysec: writes older than a second survive a crash
        kv.kill()
        kv.start()
        assert client.lrange("celery", 0, -1) == [b"task-1", b"task-2", b"task-3"]
    assert list((tmp_path / "valkey" / "appendonlydir").iterdir())


def test_valkey_outage_and_recovery(embedded_kv: EmbeddedValkey) -> None:
    client = redis.Redis.from_url(embedded_kv.url, socket_connect_timeout=1)
    client.set("outage-test", "before")
    with embedded_kv.outage():
        assert not embedded_kv.is_running()
        with pytest.raises(redis.ConnectionError):
            client.ping()
    assert client.get("outage-test") == b"before"  # same URL, data kept


def test_one_server_per_data_dir(tmp_path: Path) -> None:
    with (
        embedded_valkey(tmp_path),
        pytest.raises(DataDirInUseError, match="in use by another process"),
    ):
        EmbeddedValkey(tmp_path).start()


def test_pinned_port_already_taken_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(PortInUseError, match="OTEL_LAB_POSTGRES_PORT") as caught:
            EmbeddedPostgres(tmp_path, port=port).start()
        assert time.monotonic() - started < 5
    assert caught.value.port == port
    # The failed start released its lock: a start on a free port works at once.
    with embedded_postgres(tmp_path, port=free_port()) as pg, pg.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
