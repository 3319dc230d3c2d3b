"""``GET /api/scenarios`` and ``POST /api/scenarios/{name}``: the fault switchboard.

The console writes the same flagd flag file as ``otel-lab fault on|off`` (see
:mod:`otel_lab.faults`); the services pick the change up within about a second.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from otel_lab import faults
from otel_lab.console.routes.common import ConsoleJSON
from otel_lab.jsontypes import JSONObject


def scenarios_json() -> JSONObject:
    enabled = faults.read_enabled()
    return {
        "flags_file": str(faults.flags_path()),
        "scenarios": [
            {
                "name": f.name,
                "service": f.service,
                "description": f.description,
                "panel": f.panel,
                "dashboard": f.dashboard,
                "alert": f.alert,
                "enabled": f.name in enabled,
            }
            for f in faults.FAULTS.values()
        ],
    }


router = APIRouter(tags=["scenarios"])


@router.get("/api/scenarios")
def scenarios() -> ConsoleJSON:
    return ConsoleJSON(scenarios_json())


@router.post("/api/scenarios/{name}")
async def switch(name: str, request: Request) -> ConsoleJSON:
    """Body ``{"enabled": true|false}``."""
    if name not in faults.FAULTS:
        return ConsoleJSON({"detail": f"unknown scenario {name[:64]!r}"}, status_code=404)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
        return ConsoleJSON({"detail": 'body must be {"enabled": true|false}'}, status_code=400)
    faults.switch(name, body["enabled"])
    return ConsoleJSON(scenarios_json())
