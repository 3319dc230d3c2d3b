"""JSON log lines that carry the trace and request they belong to.

Every record gets ``service``, ``request_id``, ``trace_id`` and ``span_id`` when it is
created; the same records are also exported over OTLP, so a log line leads to its trace
and back.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from otel_lab.telemetry.context import request_id_var


def _correlating_factory(service_name: str, base_factory: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base_factory(*args, **kwargs)
        # Unset values are left off rather than set to None: OTLP attributes cannot be null.
        record.service = service_name
        if request_id := request_id_var.get():
            record.request_id = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return record

    return factory


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        # service, request_id, trace_id and span_id follow as extras when they are set.
        "{levelname}{name}{message}",
        style="{",
        timestamp=True,  # ISO 8601, UTC
        rename_fields={"levelname": "level", "name": "logger"},
        # uvicorn adds an ANSI-coloured copy of each message; the plain one is enough.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        json_ensure_ascii=False,
    )


_base_record_factory = logging.getLogRecordFactory()


def configure_logging(service_name: str, level: str, otlp_handler: logging.Handler | None) -> None:
    """Route the root logger to JSON lines on stderr (and OTLP when a handler is given)."""
    logging.setLogRecordFactory(_correlating_factory(service_name, _base_record_factory))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(json_formatter())
    handlers: list[logging.Handler] = [console]
    if otlp_handler is not None:
        # The exporters log their own failures; exporting those would feed a dead endpoint.
        otlp_handler.addFilter(lambda record: not record.name.startswith("opentelemetry"))
        handlers.append(otlp_handler)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's access log would duplicate our request_completed line.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO; our client spans already say more.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
