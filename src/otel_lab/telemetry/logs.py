"""JSON log lines that carry the trace and request they belong to.

Every record gets ``service``, ``request_id``, ``trace_id`` and ``span_id`` when it is
created and is written to stderr as one JSON line; the same records are exported over OTLP
with the trace context in the log record's own fields, so a log line leads to its trace
and back.

The per-request access line (``request_completed``) takes a shorter road: the server span
already carries everything it says, so it is written to stderr by :class:`AccessLog`
without the logging machinery and is not exported over OTLP; the console shows it in its
logs view from the span (docs/instrumentation.md, "Where the microseconds went").
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.util.types import AnyValue
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from otel_lab.telemetry.context import request_id_var

ACCESS_LOGGER = "otel_lab.request"
# Set on every record for the JSON lines; in OTLP they are the record's own fields or the
# resource's, so they are not repeated as attributes.
_CORRELATION_FIELDS = ("trace_id", "span_id", "service")


def _correlating_factory(
    service_name: str, base_factory: Callable[..., logging.LogRecord]
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:  # LogRecord's own arguments
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


class OTLPHandler(LoggingHandler):
    """The OTLP logging handler, without the correlation fields as attributes: the SDK
    puts the trace context in the record's ``trace_id``/``span_id`` and the service on
    the resource."""

    def _get_attributes(self, record: logging.LogRecord) -> tuple[dict[str, AnyValue], str | None]:
        attributes, event_name = super()._get_attributes(record)
        for name in _CORRELATION_FIELDS:
            attributes.pop(name, None)
        return attributes, event_name


class AccessLog:
    """One JSON line per request on stderr, in the same shape as the formatter's lines.

    Written directly (about 4 us) instead of through ``logging`` and python-json-logger
    (about 35 us, plus 45 us for the OTLP handler): it is the one record every request
    makes. It still obeys the level of the ``otel_lab.request`` logger.
    """

    def __init__(self, service_name: str) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._prefix = (
            '{"level": "INFO", "logger": "' + ACCESS_LOGGER + '", "message": "request_completed"'
        )
        self._service = json.dumps(service_name, ensure_ascii=False)
        self._parts: dict[tuple[str, str], str] = {}

    def write(
        self,
        *,
        method: str,
        path: str,
        status_code: int,
        elapsed_ms: float,
        request_id: str,
        trace_id: str | None,
        span_id: str | None,
    ) -> None:
        """``trace_id`` and ``span_id`` in hex, as the ``traceresponse`` header has them."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        line = (
            f"{self._request_part(method, path)}"
            f'"status_code": {status_code}, "elapsed_ms": {elapsed_ms}, '
            # A checked token (context.sanitize_request_id): nothing to escape.
            f'"service": {self._service}, "request_id": "{request_id}", '
        )
        if trace_id:
            line += f'"trace_id": "{trace_id}", "span_id": "{span_id}", '
        line += f'"timestamp": "{datetime.now(UTC).isoformat()}"}}\n'
        handler = _stderr_handler
        if handler is None:
            sys.stderr.write(line)
            return
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line)

    def _request_part(self, method: str, path: str) -> str:
        """The line's start up to the path, JSON-escaped once per (method, route): routes
        are templates, so there are few of them."""
        part = self._parts.get((method, path))
        if part is None:
            if len(self._parts) > 1024:
                self._parts.clear()
            part = self._parts[(method, path)] = (
                f"{self._prefix}, "
                f'"method": {json.dumps(method, ensure_ascii=False)}, '
                f'"path": {json.dumps(path, ensure_ascii=False)}, '
            )
        return part


_base_record_factory = logging.getLogRecordFactory()
_stderr_handler: logging.StreamHandler[TextIO] | None = None


def configure_logging(service_name: str, level: str, otlp_handler: logging.Handler | None) -> None:
    """Route the root logger to JSON lines on stderr (and OTLP when a handler is given)."""
    global _stderr_handler
    logging.setLogRecordFactory(_correlating_factory(service_name, _base_record_factory))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(json_formatter())
    _stderr_handler = console
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
