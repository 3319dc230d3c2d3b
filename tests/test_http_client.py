"""``otel_lab.http_client`` against real sockets: a scripted HTTP/1.1 server in the test's
event loop answers each request as the test says (keep-alive, close, chunks, silence)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trustme

from otel_lab import http_client
from otel_lab.http_client import (
    ConnectError,
    ConnectTimeout,
    HTTPClient,
    InvalidRequestError,
    ReadTimeout,
    RemoteProtocolError,
    Reply,
    Request,
)
from otel_lab.runtime.harness import free_ports

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

# What the server does with a request: the bytes to answer (None: nothing, keep waiting).
Script = Callable[[bytes, bytes], bytes | None]


class Server:
    """Reads requests (head and ``Content-Length`` body) and answers them by ``script``;
    records every request and how many connections were opened."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.close_after = False
        self.tls: ssl.SSLContext | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = self.script(head, body)
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()


def client_origin(server: Server) -> http_client.Origin:
    return http_client.Origin("http", "127.0.0.1", server.port)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def always(answer: bytes | None) -> Script:
    return lambda head, body: answer


def test_a_post_is_framed_and_the_connection_kept_alive() -> None:
    async def test() -> None:
        async with Server(always(OK)) as server, HTTPClient() as client:
            for n in range(3):
                reply = await client.request(
                    "POST", server.url + "/process?a=1", headers={"X-N": str(n)}, body=b"{}"
                )
                assert (reply.status_code, reply.reason_phrase, reply.json()) == (
                    200, "OK", {"ok": True},
                )  # fmt: skip
                assert (b"content-type", b"application/json") in {
                    (name.lower(), value) for name, value in reply.raw_headers
                }
            assert server.connections == 1
            head, body = server.requests[0]
            lines = head.decode().split("\r\n")
            assert lines[0] == "POST /process?a=1 HTTP/1.1"
            assert f"Host: 127.0.0.1:{server.port}" in lines
            assert "Content-Length: 2" in lines and "X-N: 0" in lines
            assert body == b"{}"

    run(test)


def test_a_get_sends_no_content_length_and_a_chunked_answer_is_joined() -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def test() -> None:
        async with Server(always(chunked)) as server, HTTPClient() as client:
            reply = await client.request("GET", server.url + "/")
            assert (reply.status_code, reply.content) == (201, b"hello world")
            assert b"content-length" not in server.requests[0][0].lower()
            await client.request("GET", server.url + "/")
            assert server.connections == 1

    run(test)


def test_connection_close_and_a_head_answer_end_the_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"

    async def test() -> None:
        async with Server(always(closing)) as server, HTTPClient() as client:
            server.close_after = True
            for _ in range(2):
                assert (await client.request("GET", server.url + "/")).content == b"hi"
            assert server.connections == 2
        async with Server(always(head_answer)) as server, HTTPClient() as client:
            reply = await client.request("HEAD", server.url + "/", timeout=2)
            assert (reply.status_code, reply.content) == (200, b"")  # no wait for 500 bytes
            await client.request("HEAD", server.url + "/", timeout=2)
            assert server.connections == 2

    run(test)


def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK

    async def test() -> None:
        async with Server(always(interim)) as server, HTTPClient() as client:
            reply = await client.request("POST", server.url + "/", body=b"x")
            assert (reply.status_code, reply.json()) == (200, {"ok": True})
            assert (await client.request("GET", server.url + "/")).status_code == 200
            assert server.connections == 1

    run(test)


def test_https_verifies_the_server_against_the_trusted_authorities(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default TLS context: a certificate from an authority the system does not trust is
    refused before anything is sent; trusted (``SSL_CERT_FILE``), the call goes through."""
    authority = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(tls)
    trusted = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(trusted))

    async def test() -> None:
        server = Server(always(OK))
        server.tls = tls
        url = f"https://127.0.0.1:{server.port}/secure"
        async with server:
            async with HTTPClient() as client:
                with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.request("GET", url)
            assert server.requests == []
            monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
            async with HTTPClient() as client:
                assert (await client.request("GET", url)).json() == {"ok": True}
            ((head, _),) = server.requests
            assert head.startswith(b"GET /secure HTTP/1.1\r\n")

    run(test)


def test_a_refused_connection_is_a_connect_error() -> None:
    (port,) = free_ports(1)

    async def test() -> None:
        async with HTTPClient() as client:
            with pytest.raises(ConnectError, match="cannot connect"):
                await client.request("GET", f"http://127.0.0.1:{port}/")

    run(test)


def test_no_answer_is_a_read_timeout_and_the_connection_is_not_reused() -> None:
    async def test() -> None:
        async with Server(first_unanswered()) as server, HTTPClient() as client:
            started = time.monotonic()
            with pytest.raises(ReadTimeout) as timed_out:
                await client.request("GET", server.url + "/", timeout=0.3)
            assert 0.25 < time.monotonic() - started < 1.0
            assert isinstance(timed_out.value, TimeoutError)
            assert (await client.request("GET", server.url + "/")).status_code == 200
            assert server.connections == 2

    run(test)


def test_a_close_ends_an_unframed_answer_and_breaks_a_framed_one() -> None:
    """No length, no chunks (an HTTP/1.0 server): the body is what came before the close.
    With a length the close cuts short, the answer is incomplete: a protocol error."""
    unframed = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
    answers = iter([unframed, unframed, cut])

    async def test() -> None:
        async with (
            Server(lambda head, body: next(answers)) as server,
            HTTPClient() as client,
        ):
            server.close_after = True
            for _ in range(2):
                reply = await client.request("GET", server.url + "/", timeout=2)
                assert (reply.status_code, reply.content) == (200, b"all of it")
            assert server.connections == 2
            with pytest.raises(RemoteProtocolError, match="before a complete answer"):
                await client.request("GET", server.url + "/")

    run(test)


def test_a_malformed_or_oversized_answer_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_client, "MAX_RESPONSE_BYTES", 10)

    async def test() -> None:
        async with Server(always(b"NOT HTTP AT ALL\r\n\r\n")) as server, HTTPClient() as client:
            with pytest.raises(RemoteProtocolError, match="malformed"):
                await client.request("GET", server.url + "/")
        big = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b"x" * 20
        async with Server(always(big)) as server, HTTPClient() as client:
            with pytest.raises(RemoteProtocolError, match="over 10 bytes"):
                await client.request("GET", server.url + "/")

    run(test)


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def test() -> None:
        async with Server(always(OK)) as server, HTTPClient() as client:
            for headers in ({"X-Evil": "a\r\nX-Injected: 1"}, {"X\nY": "a"}):
                with pytest.raises(InvalidRequestError):
                    await client.request("GET", server.url + "/", headers=headers)
            with pytest.raises(InvalidRequestError, match="not an http"):
                await client.request("GET", "ftp://example.com/")
            for target in ("/a b", "/a\r\nX: 1", "a"):
                with pytest.raises(InvalidRequestError, match="not a request target"):
                    await client.request("GET", (client_origin(server), target))
            assert server.requests == []

    run(test)


def first_unanswered() -> Script:
    """Leaves the first request unanswered and answers the others."""
    answers = iter([None])
    return lambda head, body: next(answers, OK)


@asynccontextmanager
async def one_slot_held(timeout: float) -> AsyncIterator[tuple[Server, HTTPClient, Any]]:
    """A client of one connection, that connection waiting on an unanswered request."""
    async with Server(first_unanswered()) as server, HTTPClient(max_connections=1) as client:
        held = asyncio.create_task(client.request("GET", server.url + "/", timeout=timeout))
        await asyncio.sleep(0.05)
        yield server, client, held


def test_the_pool_limit_queues_requests_and_a_full_pool_times_out() -> None:
    async def test() -> None:
        async with one_slot_held(timeout=0.5) as (server, client, hung):
            with pytest.raises(ConnectTimeout, match="no free connection"):
                await client.request("GET", server.url + "/", timeout=0.1)
            assert len(server.requests) == 1  # the second never left
            with pytest.raises(ReadTimeout):
                await hung
            # the slot came back: the next request waits for nothing
            assert (await client.request("GET", server.url + "/")).status_code == 200

    run(test)


def test_a_cancelled_call_frees_its_slot_and_drops_its_connection() -> None:
    async def test() -> None:
        async with one_slot_held(timeout=5) as (server, client, call):
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert (await client.request("GET", server.url + "/", timeout=1)).status_code == 200
            assert server.connections == 2

    run(test)


def test_an_idle_connection_past_the_keep_alive_window_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def test() -> None:
        async with Server(always(OK)) as server, HTTPClient() as client:
            await client.request("GET", server.url + "/")
            monkeypatch.setattr(http_client, "KEEPALIVE_SECONDS", 0.0)
            await client.request("GET", server.url + "/")
            assert server.connections == 2

    run(test)


def test_middlewares_run_in_order_around_the_exchange() -> None:
    seen: list[str] = []

    def named(name: str) -> Any:
        async def middleware(
            request: Request, handler: Callable[[Request], Awaitable[Reply]]
        ) -> Reply:
            seen.append(f"{name}>")
            request.headers[f"x-{name}"] = "1"
            reply = await handler(request)
            seen.append(f"<{name}")
            return reply

        return middleware

    async def test() -> None:
        async with (
            Server(always(OK)) as server,
            HTTPClient(middlewares=(named("outer"), named("inner"))) as client,
        ):
            await client.request("GET", server.url + "/")
            head = server.requests[0][0].decode().lower()
            assert "x-outer: 1" in head and "x-inner: 1" in head

    run(test)
    assert seen == ["outer>", "inner>", "<inner", "<outer"]
