"""The telemetry package stands alone: it imports nothing from the rest of the application,
so it can be copied into another service as it is (configuration comes from the ``OTEL_*``
environment and from parameters)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import importlib, json, pkgutil, sys
import otel_lab.telemetry as package
for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
print(json.dumps(sorted(
    name for name in sys.modules
    if name.startswith("otel_lab") and not name.startswith("otel_lab.telemetry")
)))
"""


def test_telemetry_imports_nothing_from_the_application() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    # The top-level package is imported on the way in (it only defines __version__).
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["otel_lab"]
