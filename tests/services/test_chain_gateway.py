"""The gateway: one routing table, ``/api/v1`` aliases, request IDs, baggage hygiene, and
what a client sees when an upstream is down (502), too slow (504) or fenced off by the
breaker (503).

Failure modes are tested on a second gateway process started here with its upstream URLs
pointed at a closed port and at a real, deliberately slow HTTP server, so the shared system
stays healthy for the other tests.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from otel_lab.runtime.harness import RunningSystem, free_ports
from otel_lab.services.gateway.routes import API_PREFIX, owner_of
from tests.conftest import Console, Span, span_named, trace_id_of


def _both_served(spans: list[Span]) -> bool:
    """The gateway's and user-service's request spans are in (each ends last in its process)."""
    return all(
        any(
            s["service_name"] == service
            and s["kind"] == "SERVER"
            and "request.id" in s["attributes"]
            for s in spans
        )
        for service in ("gateway", "user-service")
    )


# --------------------------------------------------------------------------- routing


def test_routing_table_owners() -> None:
    assert owner_of("/process") == owner_of("/api/v1/process") == "user-service"
    assert owner_of("/users/1001/todos") == owner_of("/todos/3/complete") == "user-service"
    assert owner_of("/orders/7") == "order-service"
    assert owner_of("/audit") == "audit-service"
    assert owner_of("/items/1") == owner_of("/weather/london") == "api"
    assert owner_of("/itemsx") is None and owner_of("/api/v1") is None and owner_of("/") is None


@pytest.mark.parametrize("base", ["", API_PREFIX])
def test_paths_reach_their_service_with_and_without_api_v1(
    gateway: httpx.Client, system: RunningSystem, base: str
) -> None:
    direct = httpx.get(system.url("user-service") + "/users/1002").json()
    assert gateway.get(f"{base}/users/1002").json() == direct
    assert gateway.get(f"{base}/orders", params={"limit": 1}).status_code == 200
    assert gateway.get(f"{base}/audit", params={"limit": 1}).status_code == 200
    assert gateway.get(f"{base}/todos", params={"limit": 1}).status_code == 200


def test_query_status_and_headers_come_back(gateway: httpx.Client) -> None:
    response = gateway.get("/api/v1/users", params={"limit": 2, "offset": 1})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert int(response.headers["x-total-count"]) >= 10
    assert response.headers["content-type"] == "application/json"
    missing = gateway.get("/api/v1/users/2000000000")
    assert missing.status_code == 404 and missing.json()["detail"] == "user 2000000000 not found"
    created = gateway.post("/api/v1/users", json={"name": "Gateway", "email": "gw-x@example.com"})
    assert created.status_code in (201, 409)


def test_unknown_path_is_a_json_404(gateway: httpx.Client) -> None:
    for path in ("/nope", "/api/v1/nope", "/api/v2/users", "/usersx"):
        response = gateway.get(path)
        assert response.status_code == 404, path
        body = response.json()
        assert body["detail"] == f"no service owns {path}"
        assert "/process" in body["routes"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/process", "POST"),
        ("PATCH", "/users", "GET, POST"),
        ("POST", "/orders/1", "GET"),
        ("PUT", "/api/v1/audit", "GET"),
    ],
)
def test_wrong_method_on_a_proxied_path_is_the_services_405(
    gateway: httpx.Client, system: RunningSystem, method: str, path: str, allow: str
) -> None:
    """The owning service's 405 and its ``Allow`` come back as they are: not a 404, not
    a 502 (the gateway proxies every method; the service knows what its path takes)."""
    response = gateway.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json()["error_type"] == "method_not_allowed"
    direct = httpx.request(method, system.url(owner_of(path) or "") + path.removeprefix(API_PREFIX))
    assert (direct.status_code, direct.headers["allow"]) == (405, allow)


def test_wrong_method_on_the_gateways_own_path_is_a_405(gateway: httpx.Client) -> None:
    response = gateway.put("/health")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET"
    assert response.json()["error_type"] == "method_not_allowed"


def test_gateway_health_ready_and_metrics_are_its_own(gateway: httpx.Client) -> None:
    assert gateway.get("/health").json() == {"status": "ok", "service": "gateway"}
    ready = gateway.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "api": "ok", "user-service": "ok", "order-service": "ok", "audit-service": "ok"
    }  # fmt: skip
    metrics = gateway.get("/metrics").text
    assert 'circuit_breaker_state{downstream="user-service"} 0.0' in metrics


def test_request_id_is_forwarded_and_echoed(gateway: httpx.Client, console: Console) -> None:
    response = gateway.get("/api/v1/users/1003", headers={"X-Request-ID": "gw-test-42"})
    assert response.headers["x-request-id"] == "gw-test-42"
    assert len(response.headers.get_list("traceresponse")) == 1  # upstream's is not leaked
    spans = console.trace(
        trace_id_of(response),
        until=_both_served,
    )
    users_server = [
        s for s in spans if s["service_name"] == "user-service" and s["kind"] == "SERVER"
    ]
    assert any(s["attributes"].get("request.id") == "gw-test-42" for s in users_server)
    gateway_server = span_named(spans, "GET /api/v1/users/{rest:path}", "gateway")
    assert gateway_server["parent_span_id"] is None


def test_inbound_baggage_is_dropped_at_the_gateway(gateway: httpx.Client, console: Console) -> None:
    response = gateway.get("/api/v1/users/1001", headers={"baggage": "user.id=666,action=forged"})
    assert response.status_code == 200
    spans = console.trace(
        trace_id_of(response),
        until=_both_served,
    )
    for span in spans:
        assert span["attributes"].get("user.id") != "666", span["name"]
        assert span["attributes"].get("action") != "forged", span["name"]


# --------------------------------------------------------------------------- failure modes


class _SlowHandler(BaseHTTPRequestHandler):
    """A real upstream that answers too late (the gateway under test gives up first), but
    for ``/audit/gzip``: at once, gzip-encoded, in chunks."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/audit/gzip":
            self._gzip_in_chunks()
            return
        time.sleep(2.0)
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:
            pass  # the gateway under test gave up long ago, as it should

    def _gzip_in_chunks(self) -> None:
        body = gzip.compress(b'{"encoded": true}')
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for part in (body[:10], body[10:]):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _start_gateway(system: RunningSystem, log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    (port,) = free_ports(1)
    environment = {
        **os.environ,
        **{k: v for k, v in system.env.items() if k.endswith("_PORT") or k.startswith("OTEL_")},
        "OTEL_SERVICE_NAME": "gateway",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}",
        "GATEWAY_PORT": str(port),
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory",
             "otel_lab.services.gateway.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            env=environment, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"test gateway did not start:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def broken_gateway(
    system: RunningSystem, slow_upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway whose api is a closed port and whose audit-service is too slow."""
    (closed_port,) = free_ports(1)  # nothing listens there
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    process, url = _start_gateway(
        system,
        log,
        API_URL=f"http://127.0.0.1:{closed_port}",
        AUDIT_SERVICE_URL=slow_upstream,
        GATEWAY_UPSTREAM_TIMEOUT_SECONDS="0.5",
        GATEWAY_TRUST_INBOUND_BAGGAGE="true",
        CIRCUIT_BREAKER_FAILURE_THRESHOLD="5",
        CIRCUIT_BREAKER_RESET_SECONDS="30",
    )
    yield url
    process.terminate()
    process.wait(10)


def test_an_encoded_chunked_answer_comes_back_with_its_encoding(broken_gateway: str) -> None:
    """The gateway re-frames the body (the chunks joined, a Content-Length of its own) and
    passes the upstream's Content-Encoding on with the bytes it describes."""
    response = httpx.get(broken_gateway + "/audit/gzip", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "transfer-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(gzip.compress(b'{"encoded": true}'))
    assert response.json() == {"encoded": True}  # httpx decodes it


def test_upstream_timeout_is_a_504_naming_the_service(broken_gateway: str) -> None:
    started = time.monotonic()
    response = httpx.get(broken_gateway + "/api/v1/audit", timeout=10)
    assert response.status_code == 504
    body = response.json()
    assert body["service"] == "audit-service" and "timed out" in body["detail"]
    assert time.monotonic() - started < 1.9  # gave up, did not wait for the slow answer
    assert "circuit_breaker_state" in httpx.get(broken_gateway + "/metrics").text


def test_ready_reports_the_unreachable_upstreams(broken_gateway: str) -> None:
    response = httpx.get(broken_gateway + "/ready", timeout=10)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["user-service"] == "ok" and checks["order-service"] == "ok"
    assert checks["api"].startswith("unavailable") and checks["audit-service"].startswith(
        "unavailable"
    )


def test_upstream_down_is_a_502_then_the_breaker_opens(
    broken_gateway: str, console: Console
) -> None:
    """Connection refused: retried (the request never left), then 502 naming the service.
    Every refused attempt counts; the breaker opens and later calls get a fast 503."""
    first = httpx.get(broken_gateway + "/items/1", timeout=10)
    assert first.status_code == 502
    body = first.json()
    assert body["service"] == "api" and body["step"] == "proxy"
    assert body["detail"].startswith("api unavailable: connection failed")

    spans = console.trace(
        trace_id_of(first), until=lambda spans: any(s["name"] == "api proxy" for s in spans)
    )
    call = span_named(spans, "api proxy", "gateway")
    assert call["status"]["code"] == "ERROR"
    assert call["attributes"]["retry.attempts"] == 3
    assert [e["attributes"]["retry.reason"] for e in call["events"] if e["name"] == "retry"] == [
        "ConnectError",
        "ConnectError",
    ]

    statuses = [httpx.post(broken_gateway + "/analyze", json={}).status_code for _ in range(3)]
    assert statuses[0] == 502 and statuses[-1] == 503
    refused = httpx.get(broken_gateway + "/hello")
    assert refused.status_code == 503
    assert refused.json()["service"] == "api" and "circuit open" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    metrics = httpx.get(broken_gateway + "/metrics").text
    assert 'circuit_breaker_state{downstream="api"} 2.0' in metrics
    assert 'circuit_breaker_state{downstream="user-service"} 0.0' in metrics
    # Other upstreams are unaffected.
    assert httpx.get(broken_gateway + "/users/1001").status_code == 200


def test_trusted_baggage_reaches_the_services(broken_gateway: str, console: Console) -> None:
    """With GATEWAY_TRUST_INBOUND_BAGGAGE=true the caller's baggage travels on."""
    response = httpx.get(
        broken_gateway + "/api/v1/users/1001", headers={"baggage": "user.id=1001,action=trusted"}
    )
    assert response.status_code == 200
    spans = console.trace(
        trace_id_of(response),
        until=_both_served,
    )
    users = [s for s in spans if s["service_name"] == "user-service"]
    assert all(s["attributes"].get("action") == "trusted" for s in users)
