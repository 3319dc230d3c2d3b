"""The request ID crosses the broker: publishers put it in the task's message headers and
the worker sets it for the task's run, so the worker's log lines carry the ``request_id``
of the HTTP request that queued the work (the trace context travels beside it, injected
by the Celery instrumentation)."""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import Token

from celery import Task
from celery.signals import before_task_publish, task_postrun, task_prerun

from otel_lab.telemetry.context import request_id_var, sanitize_request_id

REQUEST_ID_HEADER = "request_id"
_tokens: dict[str, Token[str | None]] = {}


def _add_request_id(headers: MutableMapping[str, object] | None = None, **_: object) -> None:
    request_id = request_id_var.get()
    if request_id and headers is not None:
        headers[REQUEST_ID_HEADER] = request_id


def _adopt_request_id(task_id: str, task: Task, **_: object) -> None:
    value = getattr(task.request, REQUEST_ID_HEADER, None)
    if value:
        _tokens[task_id] = request_id_var.set(sanitize_request_id(str(value)))


def _drop_request_id(task_id: str, **_: object) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        request_id_var.reset(token)


def propagate_request_ids() -> None:
    """Connect the publish and run signals (idempotent: Celery dedupes by dispatch_uid)."""
    before_task_publish.connect(_add_request_id, weak=False, dispatch_uid="otel-lab-rid-out")
    task_prerun.connect(_adopt_request_id, weak=False, dispatch_uid="otel-lab-rid-in")
    task_postrun.connect(_drop_request_id, weak=False, dispatch_uid="otel-lab-rid-done")
