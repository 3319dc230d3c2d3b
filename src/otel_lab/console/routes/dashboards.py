"""``/api/dashboards``: the Grafana dashboards of deploy/, filled from the running system."""

from __future__ import annotations

from fastapi import APIRouter

from otel_lab.console import dashboards
from otel_lab.console.promapi import PromState, source
from otel_lab.console.routes.common import ConsoleJSON, PromDep, StoreDep, Text, Window, error
from otel_lab.console.routes.prom import UnixSeconds

router = APIRouter(prefix="/api/dashboards", tags=["dashboards"])


def _boards(state: PromState) -> dict[str, dashboards.Dashboard]:
    return dashboards.load(state.deploy / "grafana" / "dashboards")


@router.get("")
def dashboard_list(state: PromDep) -> ConsoleJSON:
    boards = _boards(state).values()
    return ConsoleJSON({"dashboards": [{"uid": b.uid, "title": b.title} for b in boards]})


@router.get("/{uid}")
def dashboard(
    store: StoreDep,
    state: PromDep,
    uid: str,
    window: Window = None,
    end: UnixSeconds = None,
    service: Text = None,
) -> ConsoleJSON:
    """The dashboard's panels filled from the running system (``window=15m``...)."""
    board = _boards(state).get(uid)
    if board is None:
        return error(404, f"dashboard {uid} not found")
    renderer = dashboards.Renderer(
        store.reader(),
        source(store, state),
        end_s=end,
        range_s=window if isinstance(window, float) else None,
        service=service or dashboards.ALL,
        scrape_s=state.scrape_seconds,
    )
    return ConsoleJSON(renderer.render(board))
