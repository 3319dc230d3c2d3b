"""How the runtime starts the weather upstream in each instrumentation mode (manual or zero-code).

``manual`` (the default) is the plain uvicorn command every service uses: the app calls our
telemetry package. ``zero-code`` puts ``opentelemetry-instrument`` in front of the same
command and passes the agent's configuration as environment variables; the app notices the
mode and leaves the SDK set-up to the agent (see ``app._zero_code_app``).

The runtime calls :func:`wrap_argv` and :func:`environment` on the spec it already builds::

    argv = launch.wrap_argv(argv, settings)
    env = {**env, **launch.environment(settings)}
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from otel_lab.registry import WEATHER_UPSTREAM
from otel_lab.settings import Settings

SERVICE_NAME = WEATHER_UPSTREAM.name

# The agent's defaults, chosen to match what the telemetry package does by hand:
ZERO_CODE_ENV: dict[str, str] = {
    "INSTRUMENTATION_MODE": "zero-code",
    # The distro defaults to gRPC; the console (and our collector config) take OTLP/HTTP.
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    # The Python exporters read these in seconds (the spec says milliseconds).
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2",
    "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "2",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    # Probes would outnumber real requests in the trace store.
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "health,ready,metrics",
    # The upstream talks to no database, cache or broker: loading those instrumentors only
    # costs start-up time. This is the knob for "what to turn off".
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy,redis,celery,httpx,httpx2,aiohttp-client",
}


def instrument_command() -> list[str]:
    """``opentelemetry-instrument`` from this interpreter's environment."""
    script = Path(sys.executable).with_name("opentelemetry-instrument")
    if script.is_file():
        return [str(script)]
    found = shutil.which("opentelemetry-instrument")
    if found:
        return [found]
    # Same entry point, when the console script is not on disk (e.g. a zipapp).
    return [
        sys.executable,
        "-c",
        "from opentelemetry.instrumentation.auto_instrumentation import run; run()",
    ]


def wrap_argv(argv: list[str], settings: Settings) -> list[str]:
    """The command to run: ``argv`` itself, or ``argv`` under the agent in zero-code mode."""
    if settings.instrumentation_mode != "zero-code":
        return list(argv)
    return [*instrument_command(), *argv]


def environment(settings: Settings) -> dict[str, str]:
    """Extra environment for the upstream process (empty in manual mode)."""
    if settings.instrumentation_mode != "zero-code":
        return {}
    return dict(ZERO_CODE_ENV)
