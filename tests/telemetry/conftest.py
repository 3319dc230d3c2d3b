"""Fixtures shared by the telemetry tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability


@contextmanager
def stable_semantic_conventions() -> Iterator[None]:
    """The contrib instrumentations' opt-in set to the stable conventions the services run
    with (``http,database``), for the duration of the block.

    The contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process, so setting the
    variable alone depends on which test initialised it first: reset the reading too.
    """
    stability = _OpenTelemetrySemanticConventionStability
    patch = pytest.MonkeyPatch()
    patch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    patch.setattr(stability, "_initialized", False)
    patch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    stability._initialize()
    try:
        yield
    finally:
        patch.undo()


@pytest.fixture
def stable_semconv() -> Iterator[None]:
    with stable_semantic_conventions():
        yield


def without_otel_variables(**variables: str) -> dict[str, str]:
    """This process's environment for a child that sets telemetry up: none of the ``OTEL_*``
    variables the test run may carry, then ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(variables)
    return env
