"""Celery's side of telemetry: the contrib instrumentation, given the providers to report
to, and the request ID across the broker.

Publishers put the request ID in the task's message headers and the worker sets it for the
task's run, so the worker's log lines carry the ``request_id`` of the HTTP request that
queued the work (the trace context travels beside it, injected by the instrumentation)."""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import Token

from celery import Task
from celery.signals import before_task_publish, task_postrun, task_prerun
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from otel_lab.telemetry.context import request_id_var, sanitize_request_id
from otel_lab.telemetry.setup import Telemetry

REQUEST_ID_HEADER = "request_id"
_tokens: dict[str, Token[str | None]] = {}
# The providers the instrumentation reports to, as this module last set them.
_instrumented: dict[str, tuple[trace.TracerProvider | None, metrics.MeterProvider | None]] = {}


def instrument_celery(telemetry: Telemetry) -> None:
    """Trace publishing and running tasks to ``telemetry``'s providers (none when it is off).

    Both sides call it: publishers inject the trace context into the message headers and
    the worker continues the trace from them. Celery's signals belong to the process, so
    the instrumentation is one per process: called again with other providers (a test's
    app after another's), it moves to them. One that ``opentelemetry-instrument`` made
    (global providers) is kept when the global providers are what is asked for.
    """
    instrumentor = CeleryInstrumentor()  # a singleton
    wanted = (telemetry.tracer_provider, telemetry.meter_provider) if telemetry.enabled else None
    current = (
        _instrumented.get("providers", (None, None))
        if instrumentor.is_instrumented_by_opentelemetry
        else None
    )
    if current == wanted:
        return
    if current is not None:
        instrumentor.uninstrument()
    _instrumented.pop("providers", None)
    if wanted is not None:
        tracer_provider, meter_provider = wanted
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        _instrumented["providers"] = wanted


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
