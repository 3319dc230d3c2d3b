"""Dependency outages: Redis down still serves reads from PostgreSQL; PostgreSQL down
answers 503 JSON quickly; nothing written is lost, and the system recovers by itself.

These tests stop real servers, so they run an api and a worker of their own against a
PostgreSQL and a Valkey of their own, exporting telemetry to the shared system's console.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from otel_lab.runtime.embedded import EmbeddedPostgres, EmbeddedValkey
from otel_lab.runtime.harness import RunningSystem, free_ports
from otel_lab.runtime.plan import MIGRATIONS_INI
from otel_lab.runtime.supervisor import ChildSpec, Supervisor
from tests.conftest import Console, has_spans, span_named, trace_id_of, uvicorn_spec


class Stack:
    def __init__(self, pg: EmbeddedPostgres, kv: EmbeddedValkey, api: str) -> None:
        self.pg, self.kv, self.api = pg, kv, api


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, system: RunningSystem) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("outages")
    with EmbeddedPostgres(data_dir) as pg, EmbeddedValkey(data_dir) as kv:
        api_port, metrics_port = free_ports(2)
        env = {
            **os.environ,
            "DATABASE_URL": pg.url,
            "REDIS_URL": kv.url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "WORKER_METRICS_PORT": str(metrics_port),
            "PENDING_SWEEP_SECONDS": "3",
        }
        subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(MIGRATIONS_INI), "upgrade", "head"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        # The worker runs under the runtime's supervisor, as in embedded mode: kombu's Redis
        # transport can take the worker down when the broker vanishes mid-task, and the
        # supervisor starts it again.
        worker = ChildSpec(
            "worker",
            [sys.executable, "-m", "celery", "-A", "otel_lab.worker.app", "worker",
             "--pool", "threads", "--concurrency", "2", "--without-mingle", "--without-gossip"],
            env={**env, "OTEL_SERVICE_NAME": "worker"},
        )  # fmt: skip
        supervisor = Supervisor(data_dir)
        watcher = threading.Thread(target=supervisor.wait, daemon=True)
        try:
            supervisor.start_group(
                [uvicorn_spec("api", "otel_lab.services.api.app", api_port, env), worker]
            )
            watcher.start()
            yield Stack(pg, kv, f"http://127.0.0.1:{api_port}")
        finally:
            supervisor.stop_requested = signal.SIGTERM
            if watcher.is_alive():
                watcher.join(5)
            supervisor.stop_all()


def _item_status(api: str, item_id: int) -> str:
    return httpx.get(f"{api}/items/{item_id}", timeout=5).json()["status"]


def test_reads_survive_a_cache_outage(stack: Stack, console: Console) -> None:
    item = httpx.post(f"{stack.api}/items", json={"name": "survivor"}).json()
    with stack.kv.outage():
        response = httpx.get(f"{stack.api}/items/{item['id']}", timeout=10)
        assert response.status_code == 200 and response.json()["name"] == "survivor"
        spans = console.trace(
            trace_id_of(response), until=has_spans(("api", "GET /items/{item_id}"), "SELECT*")
        )
        server = span_named(spans, "GET /items/{item_id}", "api")
        assert "cache.unavailable" in [e["name"] for e in server["events"]]
        assert any(s["name"].startswith("SELECT") for s in spans)
        ready = httpx.get(f"{stack.api}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["cache"].startswith("unavailable")


def test_writes_during_a_broker_outage_are_enriched_later(stack: Stack) -> None:
    with stack.kv.outage():
        started = time.monotonic()
        response = httpx.post(f"{stack.api}/items", json={"name": "written blind"}, timeout=15)
        assert time.monotonic() - started < 5, "a broker outage must not hang the write"
    assert response.status_code == 201
    item = response.json()
    assert item["status"] == "pending"
    # The worker's sweep re-queues items left pending (every PENDING_SWEEP_SECONDS).
    deadline = time.monotonic() + 45
    while _item_status(stack.api, item["id"]) != "enriched":
        assert time.monotonic() < deadline, "the item written during the outage was never enriched"
        time.sleep(1)


def test_database_outage_answers_503_quickly_and_recovers(stack: Stack) -> None:
    item = httpx.post(f"{stack.api}/items", json={"name": "kept"}).json()
    with stack.pg.outage():
        started = time.monotonic()
        response = httpx.get(f"{stack.api}/items/{item['id'] + 1000}", timeout=15)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "database unavailable, try again shortly"
        assert elapsed < 5, f"took {elapsed:.1f} s"
        write = httpx.post(f"{stack.api}/items", json={"name": "refused"}, timeout=15)
        assert write.status_code == 503
        assert httpx.get(f"{stack.api}/ready", timeout=10).status_code == 503
    # Back up: the row written before the outage is still there.
    deadline = time.monotonic() + 15
    while True:
        response = httpx.get(f"{stack.api}/items/{item['id']}", timeout=5)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 200 and response.json()["name"] == "kept"
