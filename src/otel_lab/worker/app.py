"""Worker entry point: ``celery -A otel_lab.worker.app worker --pool threads``.

Telemetry starts in the worker process itself (``worker_init`` for the solo and threads
pools, ``worker_process_init`` for prefork children), never in a parent before a fork; the
settings are read there too, and both are handed to the tasks (``tasks.configure``).
The threads pool keeps one process per worker, so its Prometheus metrics stay coherent.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Task
from celery.app import trace as celery_trace
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client import Counter, Histogram, start_http_server

from otel_lab.gc_tuning import settle_garbage_collector
from otel_lab.queue import create_celery_app
from otel_lab.settings import Settings, get_settings
from otel_lab.telemetry import setup_telemetry, shutdown_telemetry
from otel_lab.telemetry.celery import instrument_celery
from otel_lab.telemetry.metrics import LATENCY_BUCKETS
from otel_lab.worker import tasks

SERVICE_NAME = "worker"

logger = logging.getLogger(__name__)

# The process's settings: the entry point is the one place that reads them.
settings: Settings = get_settings()
app = create_celery_app(settings, include=["otel_lab.worker.tasks"])

TASKS = Counter("celery_tasks", "Celery tasks run, by outcome.", ["task", "state"])
TASK_DURATION = Histogram(
    "celery_task_duration_seconds", "Celery task run time.", ["task"], buckets=LATENCY_BUCKETS
)
_task_started: dict[str, float] = {}


@worker_init.connect
@worker_process_init.connect
def _start_telemetry(**_: object) -> None:
    telemetry = setup_telemetry(SERVICE_NAME, **settings.telemetry_defaults())
    instrument_celery(telemetry)  # the run/... spans, and the sweep's publishes
    tasks.configure(settings, telemetry)


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    start_http_server(settings.worker_metrics_port, addr=settings.host)


def _not_a_success(record: logging.LogRecord) -> bool:
    return record.msg is not celery_trace.LOG_SUCCESS


@worker_init.connect
def _quiet_celery_per_task_lines(**_: object) -> None:
    """Celery's own INFO lines for every task ("Task ... received", "Task ... succeeded in
    ...") only at LOG_LEVEL=DEBUG: a task's run is its span and its own ``item_enriched``
    line (with the ``request_id``), and the two lines were about an eighth of the worker's
    CPU under load (docs/performance.md). Retries, failures and everything else Celery logs
    stay."""
    if settings.log_level.upper() == "DEBUG":
        return
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)  # "received"
    logging.getLogger(celery_trace.__name__).addFilter(_not_a_success)


@worker_ready.connect
def _sweep_pending_items(**_: object) -> None:
    """Items written while the broker was down are enriched once it is back: at start-up
    and then periodically, off the consumer thread."""
    interval = settings.pending_sweep_seconds

    def loop() -> None:
        while True:
            try:
                tasks.requeue_pending_items(older_than_seconds=interval)
            except Exception:
                logger.warning("pending_items_sweep_failed", exc_info=True)
            time.sleep(interval)

    threading.Thread(target=loop, name="pending-sweep", daemon=True).start()


@worker_ready.connect
def _settle_gc(**_: object) -> None:
    """As the services do once up: the worker's heap (Celery's bootsteps, the app, the
    engine) frozen, and young collections less often."""
    settle_garbage_collector()


@task_prerun.connect
def _task_started_at(task_id: str, **_: object) -> None:
    _task_started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str, task: Task, state: str | None = None, **_: object) -> None:
    started = _task_started.pop(task_id, None)
    if started is not None:
        TASK_DURATION.labels(task.name).observe(time.perf_counter() - started)
    TASKS.labels(task.name, state or "UNKNOWN").inc()


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_telemetry(**_: object) -> None:
    shutdown_telemetry()
