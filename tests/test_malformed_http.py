"""Requests that HTTP/1.1 parsing refuses before any app code runs (uvicorn answers them
itself) get the same JSON 400 as every other bad request, on every service, the gateway
and the console's UI port (``otel_lab.http_protocol``), and on the OTLP port a
google.rpc.Status in JSON as its other errors; uvicorn's own is text/plain. A request head
over the limit gets a 431, one that stops arriving a 408, in the same shapes."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import time
from urllib.parse import urlsplit

import pytest

from otel_lab.http_protocol import HEAD_SECONDS, MAX_HEAD_BYTES
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


def _answers(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset after its answer (it closed with
    some of a huge head unread) ends the answer too."""
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _status_and_body(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def _exchange(url: str, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; the status line, headers and body of the answer (the server closes)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        return _status_and_body(_answers(sock))


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


# --------------------------------------------------------------------------- request head limits

HEALTH = {"console": "/api/health"}


def _head(path: str, size: int, *, close: bool = False) -> bytes:
    """A GET of ``path`` whose request line and headers take ``size`` bytes, as sent."""
    start = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    start += "Connection: close\r\n" if close else ""
    pad = size - len(start) - len("X-Pad: \r\n\r\n")
    return (start + "X-Pad: " + "a" * pad + "\r\n\r\n").encode()


def _endless_head(url: str, path: str) -> bytes:
    """Send a head that never ends, a header line at a time, until the server answers."""
    parts = urlsplit(url)
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        sent = 0
        while sent < 4 * 1_048_576 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(line)
        answer = _answers(sock)
    assert sent < 4 * 1_048_576, "the server read 4 MiB of one request head"
    return answer


def _refused_heads(url: str, path: str) -> list[tuple[str, dict[str, str], bytes]]:
    """The answers to a head just over the limit in one write, and to an endless one."""
    in_one_write = _exchange(url, _head(path, MAX_HEAD_BYTES + 64))
    return [in_one_write, _status_and_body(_endless_head(url, path))]


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_head_over_the_limit_gets_a_json_431_and_a_close(
    system: RunningSystem, server: str
) -> None:
    path = HEALTH.get(server, "/health")
    for status, headers, body in _refused_heads(system.url(server), path):
        assert status.startswith("HTTP/1.1 431"), (status, body)
        assert headers["content-type"] == "application/json", headers
        assert headers["connection"] == "close", headers
        assert json.loads(body) == {
            "detail": f"request line and headers larger than {MAX_HEAD_BYTES} bytes",
            "error_type": "request_header_fields_too_large",
            "request_id": None,
        }


def test_the_otlp_port_answers_a_head_over_the_limit_with_a_json_status(
    system: RunningSystem,
) -> None:
    url = f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}"
    for status, headers, body in _refused_heads(url, "/v1/traces"):
        assert status.startswith("HTTP/1.1 431"), (status, body)
        assert headers["content-type"] == "application/json", headers
        assert headers["connection"] == "close", headers
        assert json.loads(body)["code"] == 8, body  # google.rpc.Code RESOURCE_EXHAUSTED


@pytest.mark.parametrize("server", [*SERVERS, "otlp"])
def test_heads_under_the_limit_are_served_on_one_kept_alive_connection(
    system: RunningSystem, server: str
) -> None:
    """Heads just under the limit, in one write or split over reads, then pipelined ones
    whose sizes add up to more than the limit: the count is per request."""
    if server == "otlp":
        url, path = f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}", "/"
    else:
        url, path = system.url(server), HEALTH.get(server, "/health")
    under = _head(path, MAX_HEAD_BYTES - 64)
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(under)
        sock.sendall(under[:100])
        time.sleep(0.2)  # most likely a read of its own: the head then spans reads
        sock.sendall(under[100:] + _head(path, 10_000) * 3 + _head(path, 200, close=True))
        answers = _answers(sock)
    assert re.findall(rb"HTTP/1\.1 \d+", answers) == [b"HTTP/1.1 200"] * 6, answers[:2000]


def test_a_head_that_stops_arriving_gets_a_408_and_an_idle_connection_is_closed(
    system: RunningSystem,
) -> None:
    parts = urlsplit(system.url("api"))
    address = (parts.hostname, parts.port)
    with (
        socket.create_connection(address, timeout=HEAD_SECONDS * 3) as idle,
        socket.create_connection(address, timeout=HEAD_SECONDS * 3) as slow,
    ):
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert idle.recv(1) == b""  # closed after uvicorn's keep-alive timeout, no answer
        status, headers, body = _status_and_body(_answers(slow))
    assert status.startswith("HTTP/1.1 408"), (status, body)
    assert headers["connection"] == "close", headers
    assert json.loads(body)["error_type"] == "request_timeout", body
