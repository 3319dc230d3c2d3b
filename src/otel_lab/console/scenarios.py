"""``GET /api/scenarios`` and ``POST /api/scenarios/{name}``: the fault switchboard.

The console writes the same flagd flag file as ``otel-lab fault on|off`` (see
:mod:`otel_lab.faults`); the services pick the change up within about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from otel_lab import faults
from otel_lab.console.routes.common import ConsoleJSON, OptionsDep
from otel_lab.jsontypes import JSONObject


async def _flags_file(options: OptionsDep) -> Path:
    if options.flags_file is None:
        raise HTTPException(404, "this console switches no fault flags")
    return options.flags_file


FlagsFile = Annotated[Path, Depends(_flags_file)]


def scenarios_json(path: Path) -> JSONObject:
    enabled = faults.read_enabled(path)
    return {
        "flags_file": str(path),
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
def scenarios(path: FlagsFile) -> ConsoleJSON:
    return ConsoleJSON(scenarios_json(path))


@router.post("/api/scenarios/{name}")
async def switch(name: str, request: Request, path: FlagsFile) -> ConsoleJSON:
    """Body ``{"enabled": true|false}``."""
    if name not in faults.FAULTS:
        return ConsoleJSON({"detail": f"unknown scenario {name[:64]!r}"}, status_code=404)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
        return ConsoleJSON({"detail": 'body must be {"enabled": true|false}'}, status_code=400)
    faults.switch(name, body["enabled"], path)
    return ConsoleJSON(scenarios_json(path))
