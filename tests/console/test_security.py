"""Token for OTLP and the UI/API, loopback defaults, Host and Origin checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.rpc import status_pb2

from .builders import new_span_id, new_trace_id, span, traces_request
from .conftest import Console, start_console

PROTOBUF = "application/x-protobuf"
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    console = start_console(tmp_path_factory.mktemp("locked") / "telemetry.db", "--token", TOKEN)
    yield console
    assert console.stop() == 0


def _body() -> tuple[str, bytes]:
    tid = new_trace_id()
    return tid, traces_request("locked", [span(tid, new_span_id(), "op")]).SerializeToString()


def test_otlp_needs_the_bearer_token(locked: Console) -> None:
    tid, body = _body()
    r = locked.post("/v1/traces", body, PROTOBUF)
    assert r.status_code == 401
    assert r.headers["content-type"] == PROTOBUF
    status = status_pb2.Status.FromString(r.content)
    assert status.code == 16 and "OTEL_EXPORTER_OTLP_HEADERS" in status.message
    assert (
        locked.post("/v1/traces", body, PROTOBUF, authorization="Bearer wrong").status_code == 401
    )
    r = locked.post("/v1/traces", body, PROTOBUF, authorization=f"Bearer {TOKEN}")
    assert r.status_code == 200
    auth = {"authorization": f"Bearer {TOKEN}"}
    locked.wait_for(lambda: locked.http.get(locked.ui_url + f"/api/traces/{tid}", headers=auth)
                    .status_code == 200)  # fmt: skip


def test_api_and_pages_need_the_token(locked: Console) -> None:
    ui = locked.ui_url
    with httpx.Client(timeout=10) as anonymous:
        r = anonymous.get(ui + "/api/traces")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["detail"]
        page = anonymous.get(ui + "/logs?service=x")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Flogs%3Fservice%3Dx"
        assert anonymous.post(ui + "/api/clear", params={"confirm": "yes"}).status_code == 401
        # Public: health (for launchers), the login page and static assets.
        assert anonymous.get(ui + "/api/health").status_code == 200
        assert anonymous.get(ui + "/login").status_code == 200
        assert anonymous.get(ui + "/static/console.css").status_code == 200
        header = {"authorization": f"Bearer {TOKEN}"}
        assert anonymous.get(ui + "/api/traces", headers=header).status_code == 200
        assert (
            anonymous.get(ui + "/api/traces", headers={"authorization": "Bearer x"}).status_code
            == 401
        )


def test_login_sets_a_session_cookie(locked: Console) -> None:
    ui = locked.ui_url
    with httpx.Client(timeout=10) as browser:
        wrong = browser.post(ui + "/login", data={"token": "nope", "next": "/red"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        ok = browser.post(ui + "/login", data={"token": TOKEN, "next": "/red"})
        assert ok.status_code == 303 and ok.headers["location"] == "/red"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        assert browser.get(ui + "/red").status_code == 200
        assert browser.get(ui + "/api/stats").json()["token_required"] is True
        # An open redirect is not possible through ?next=.
        away = browser.post(ui + "/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert away.headers["location"] == "/"
    with httpx.Client(timeout=10) as link:
        r = link.get(ui + f"/metrics?token={TOKEN}&name=x")
        assert r.status_code == 303 and r.headers["location"] == "/metrics?name=x"
        assert link.get(ui + "/metrics?name=x").status_code == 200


def test_loopback_console_refuses_foreign_host_headers(console: Console) -> None:
    r = console.http.get(console.ui_url + "/api/services", headers={"host": "attacker.example"})
    assert r.status_code == 403 and "loopback" in r.json()["detail"]
    port = console.ui_url.rsplit(":", 1)[1]
    ok = console.http.get(console.ui_url + "/api/health", headers={"host": f"localhost:{port}"})
    assert ok.status_code == 200


def test_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "otel_lab.console", "--host", "0.0.0.0", "--otlp-port", "0",
            "--ui-port", "0", "--db", str(tmp_path / "x.db")]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr
    assert "Traceback" not in result.stderr
    insecure = start_console(tmp_path / "y.db", "--host", "0.0.0.0", "--insecure")
    try:
        assert insecure.api("/api/health").status_code == 200
    finally:
        assert insecure.stop() == 0
