"""How the supervisor's restarts reach a user besides the terminal line.

- ``<data_dir>/logs/supervisor.log``: JSON lines (``child_crashed``, ``child_restarted``,
  ``child_restart_budget_exhausted``), the same shape as every service's log.
- Over OTLP to the console: the same records, and the counter ``supervisor.child.restarts``
  (attribute ``child``), so the console's metrics and logs pages show restarts next to the
  telemetry of the child that crashed. Providers of their own, not the global ones: the
  CLI process is not a service, and a console that is down costs the supervisor nothing
  (exports run on background threads and nothing is flushed at exit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from otel_lab.runtime.supervisor import Supervisor
from otel_lab.runtime.supervisor import log as supervisor_log

RESTARTS_METRIC = "supervisor.child.restarts"
SERVICE_NAME = "supervisor"
_EXPORT_TIMEOUT_SECONDS = 2.0
_providers: list[object] = []  # alive as long as the process


def report_restarts(supervisor: Supervisor, log_dir: Path, env: Mapping[str, str]) -> None:
    """Send the supervisor's records to ``supervisor.log`` and, unless the SDK is disabled,
    to the OTLP endpoint the children use (``env``, from ``child_env``)."""
    from otel_lab.telemetry.logs import json_formatter

    log_dir.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_dir / "supervisor.log")
    to_file.setFormatter(json_formatter())
    supervisor_log.addHandler(to_file)
    supervisor_log.setLevel(logging.INFO)
    supervisor_log.propagate = False
    # The exporters' complaints while the console restarts belong in the log, not the terminal.
    exporters = logging.getLogger("opentelemetry")
    exporters.addHandler(to_file)
    exporters.propagate = False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
        supervisor_log.addHandler(_otlp(supervisor, endpoint.rstrip("/"), env))


def _headers(env: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` (``k=v,k=v``), as the children get it."""
    pairs = (item.split("=", 1) for item in env.get("OTEL_EXPORTER_OTLP_HEADERS", "").split(","))
    return {key.strip(): value.strip() for key, value in (p for p in pairs if len(p) == 2)}


def _otlp(supervisor: Supervisor, endpoint: str, env: Mapping[str, str]) -> logging.Handler:
    """The restart counter and an OTLP log handler, on providers of our own."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from otel_lab.telemetry.setup import build_resource

    resource = build_resource(SERVICE_NAME)
    headers = _headers(env)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(
            endpoint=f"{endpoint}/v1/metrics", headers=headers, timeout=_EXPORT_TIMEOUT_SECONDS
        ),
        export_timeout_millis=_EXPORT_TIMEOUT_SECONDS * 1000,
    )
    meters = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(e.restarts, {"child": e.name}) for e in list(supervisor.running)]

    meters.get_meter("otel_lab.runtime").create_observable_counter(
        RESTARTS_METRIC,
        callbacks=[observe],
        unit="{restart}",
        description="Times the supervisor started a crashed child again",
    )
    loggers = LoggerProvider(resource=resource, shutdown_on_exit=False)
    loggers.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(
                endpoint=f"{endpoint}/v1/logs", headers=headers, timeout=_EXPORT_TIMEOUT_SECONDS
            )
        )
    )
    _providers.extend((meters, loggers))

    class Handler(LoggingHandler):
        def flush(self) -> None:
            """Not at exit: the console is stopped by then, and the batch exports anyway."""

    return Handler(logger_provider=loggers)
