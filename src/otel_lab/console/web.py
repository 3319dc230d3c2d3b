"""HTML pages of the console UI: Jinja2 shells (autoescaped) plus vanilla JS per page.

The server renders each page's frame (navigation, forms, the page's parameters as JSON in a
non-executable ``<script type="application/json">``); the page script fetches the JSON API
and builds the DOM with ``textContent`` and attributes only, never ``innerHTML``, so a
value from telemetry is always text. Everything is served from this package: no CDN.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from otel_lab.console import queries
from otel_lab.console.routes.common import OptionsDep
from otel_lab.console.security import session_cookie

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

NAV = (
    ("/", "Traces", "traces"),
    ("/map", "Service map", "map"),
    ("/red", "RED", "red"),
    ("/metrics", "Metrics", "metrics"),
    ("/dashboards", "Dashboards", "dashboards"),
    ("/alerts", "Alerts", "alerts"),
    ("/scenarios", "Scenarios", "scenarios"),
    ("/logs", "Logs", "logs"),
    ("/sql", "SQL", "sql"),
    ("/store", "Store", "store"),
)


def _asset_version() -> str:
    """Changes when any static file changes, so browsers never run stale scripts."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_version = _asset_version()
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def render(
    template: str,
    page: str,
    title: str,
    data: Mapping[str, object] | None = None,
    status: int = 200,
) -> HTMLResponse:
    html = _env.get_template(template).render(
        page=page, title=title, nav=NAV, version=_version, data=data or {}
    )
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


@router.get("/")
def traces_page() -> HTMLResponse:
    return render("traces.html", "traces", "Traces")


@router.get("/trace/{trace_id}")
def trace_page(trace_id: str) -> HTMLResponse:
    try:
        tid = queries.parse_trace_id(trace_id.strip())
    except queries.QueryError as exc:
        return render("error.html", "traces", "Bad trace id", {"message": str(exc)}, 400)
    return render("trace.html", "trace", f"Trace {tid.hex()[:8]}", {"trace_id": tid.hex()})


@router.get("/find", response_model=None)
def find(trace_id: str = "") -> Response:
    """The header's trace-id box: open the trace (ids are case- and space-insensitive)."""
    wanted = trace_id.strip().lower().replace("-", "")
    try:
        queries.parse_trace_id(wanted)
    except queries.QueryError as exc:
        return render("error.html", "traces", "Bad trace id", {"message": str(exc)}, 400)
    return RedirectResponse(f"/trace/{wanted}", status_code=303)


def _page(template: str, page: str, title: str) -> Callable[[], HTMLResponse]:
    def handler() -> HTMLResponse:
        return render(template, page, title)

    return handler


for _path, _template, _page_name, _title in (
    ("/logs", "logs.html", "logs", "Logs"),
    ("/metrics", "metrics.html", "metrics", "Metrics"),
    ("/dashboards", "dashboards.html", "dashboards", "Dashboards"),
    ("/alerts", "alerts.html", "alerts", "Alerts"),
    ("/scenarios", "scenarios.html", "scenarios", "Scenarios"),
    ("/map", "map.html", "map", "Service map"),
    ("/red", "red.html", "red", "RED"),
    ("/sql", "sql.html", "sql", "SQL"),
    ("/store", "store.html", "store", "Store"),
):
    router.add_api_route(
        _path, _page(_template, _page_name, _title), methods=["GET"], name=f"page_{_page_name}"
    )


@router.get("/login")
def login_page(next: str | None = None) -> HTMLResponse:
    return render("login.html", "login", "Log in", {"next": _safe_next(next)})


@router.post("/login", response_model=None)
async def login(request: Request, options: OptionsDep) -> Response:
    token = options.security.token
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0]
    target = _safe_next((form.get("next") or ["/"])[0])
    if token is None:
        return RedirectResponse(target, status_code=303)
    if not hmac.compare_digest(given.encode(), token.encode()):
        data = {"next": target, "error": "wrong token"}
        return render("login.html", "login", "Log in", data, 401)
    response = RedirectResponse(target, status_code=303)
    response.headers["set-cookie"] = session_cookie(token)
    return response
