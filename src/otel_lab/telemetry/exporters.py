"""Exporters chosen the way the OpenTelemetry specification says, from the environment.

``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` (``otlp``, ``console``, ``none``, comma-separated)
and ``OTEL_EXPORTER_OTLP[_{SIGNAL}]_PROTOCOL`` (``http/protobuf`` or ``grpc``) pick the
exporters; endpoint, headers, timeout and compression are read by the exporters themselves
from the standard ``OTEL_EXPORTER_OTLP[_{SIGNAL}]_*`` variables.

The OTLP/HTTP span and log exporters are the official ones with one part replaced: the
protobuf encoding, written directly to bytes by :mod:`otel_lab.telemetry._wire` (about
five times cheaper per span, measured in docs/instrumentation.md). The HTTP client, retries,
compression and the SDK's own exporter metrics are the official code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http import _log_exporter, trace_exporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExportResult

from otel_lab.telemetry._wire import LogEncoder, SpanEncoder

logger = logging.getLogger(__name__)

# An unreachable or slow collector must cost requests nothing: exports run on background
# threads from bounded queues, and each export gives up quickly unless the standard
# timeout variables say otherwise.
DEFAULT_EXPORT_TIMEOUT_SECONDS = 2.0

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"


class ConfigurationError(ValueError):
    """An ``OTEL_*`` variable names something this process cannot do."""


def _send(
    exporter: trace_exporter.OTLPSpanExporter | _log_exporter.OTLPLogExporter,
    data: bytes,
    count: int,
    what: str,
) -> bool:
    """The official exporters' send step: size check, HTTP with retries, SDK metrics."""
    with exporter._metrics.export_operation(count) as result:
        if 0 < exporter._max_request_size < len(data):
            logger.warning("dropping a %s batch of %d bytes: over the size limit", what, len(data))
            return False
        sent = exporter._client.export(data)
        if not sent.success:
            result.error = sent.error
            return False
    return True


class OTLPSpanExporter(trace_exporter.OTLPSpanExporter):
    """The official OTLP/HTTP span exporter, encoding with :class:`SpanEncoder`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        ok = _send(self, self._encoder.encode(spans), len(spans), "span")
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class OTLPLogExporter(_log_exporter.OTLPLogExporter):
    """The official OTLP/HTTP log exporter, encoding with :class:`LogEncoder`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._encoder = LogEncoder()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        ok = _send(self, self._encoder.encode(batch), len(batch), "log")
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE


def _env(name: str, signal: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_{SIGNAL}_{name}``, else ``OTEL_EXPORTER_OTLP_{name}``."""
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}")
    return specific if specific else os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")


def _otlp_options(signal: str) -> dict[str, float]:
    """A short timeout unless a standard timeout variable sets one (the Python exporters
    read them in seconds)."""
    return {} if _env("TIMEOUT", signal) else {"timeout": DEFAULT_EXPORT_TIMEOUT_SECONDS}


def _grpc(signal: str) -> Callable[..., Any]:
    try:
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            return GrpcSpanExporter
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )

            return GrpcMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )

        return GrpcLogExporter
    except ImportError as exc:
        raise ConfigurationError(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
            "installed (it is in the dev dependency group); http/protobuf needs nothing more"
        ) from exc


_HTTP = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}
_CONSOLE = {
    "traces": ConsoleSpanExporter,
    "metrics": ConsoleMetricExporter,
    "logs": ConsoleLogRecordExporter,
}


def exporters_for(signal: str) -> list[Any]:
    """The exporters ``OTEL_{SIGNAL}_EXPORTER`` asks for (default ``otlp``); ``none``
    gives an empty list, so the caller installs no processor at all for that signal."""
    names = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp")
    found: list[Any] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "console":
            found.append(_CONSOLE[signal]())
        elif name == "otlp":
            protocol = (_env("PROTOCOL", signal) or HTTP_PROTOBUF).strip().lower()
            if protocol == HTTP_PROTOBUF:
                found.append(_HTTP[signal](**_otlp_options(signal)))
            elif protocol == GRPC:
                found.append(_grpc(signal)())
            else:
                raise ConfigurationError(
                    f"OTLP protocol {protocol!r} is not supported here: "
                    f"use {HTTP_PROTOBUF} or {GRPC}"
                )
        else:
            raise ConfigurationError(
                f"OTEL_{signal.upper()}_EXPORTER={name!r}: expected otlp, console or none"
            )
    return found
