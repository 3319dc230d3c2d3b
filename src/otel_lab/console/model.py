"""The console's data model: the OTLP enums it stores as numbers, and the rows it writes."""

from __future__ import annotations

from enum import IntEnum


class SpanKind(IntEnum):
    """``Span.SpanKind`` of opentelemetry/proto/trace/v1/trace.proto."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(IntEnum):
    """``Status.StatusCode`` of opentelemetry/proto/trace/v1/trace.proto."""

    UNSET = 0
    OK = 1
    ERROR = 2
