"""Requests that HTTP/1.1 parsing refuses before any app code runs (uvicorn answers them
itself) get the same JSON 400 as every other bad request, on every service, the gateway
and the console's UI port (``otel_lab.http_protocol``), and on the OTLP port a
google.rpc.Status in JSON as its other errors; uvicorn's own is text/plain."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from otel_lab.runtime.harness import RunningSystem

SERVERS = ("gateway", "api", "user-service", "order-service", "audit-service", "console")
MALFORMED = {
    "unknown method": b"FROB /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw bytes in the path": b"GET /users/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "negative content-length": (
        b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: -1\r\n\r\n{}"
    ),
    "two content-lengths": (
        b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x"
    ),
    "bad chunk size": (
        b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
}


def _exchange(url: str, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; the status line, headers and body of the answer (the server closes)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("server", SERVERS)
def test_unparseable_requests_get_a_json_400(system: RunningSystem, server: str) -> None:
    for name, request in MALFORMED.items():
        status, headers, body = _exchange(system.url(server), request)
        assert status.startswith("HTTP/1.1 400"), (name, status, body)
        assert headers["content-type"] == "application/json", (name, headers, body)
        assert json.loads(body)["error_type"] == "bad_request", (name, body)


def test_the_otlp_port_answers_unparseable_requests_with_a_json_status(
    system: RunningSystem,
) -> None:
    url = f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}"
    for name, request in MALFORMED.items():
        status, headers, body = _exchange(url, request.replace(b"/users", b"/v1/traces"))
        assert status.startswith("HTTP/1.1 400"), (name, status, body)
        assert headers["content-type"] == "application/json", (name, headers, body)
        assert json.loads(body)["code"] == 3, (name, body)  # google.rpc.Code INVALID_ARGUMENT
