"""The HTTP/1.1 client the services call each other with: a keep-alive pool per origin on
asyncio protocols, responses parsed by httptools (the parser uvicorn reads the services'
requests with).

Why not a library: aiohttp, what these calls used before, costs the caller 147 us of CPU
per POST made one at a time and 77 us eight at a time on this kind of machine, this client
67 and 24 us (``scripts/bench_clients.py``); pyreqwest (Rust's reqwest) came closest of the
others tried, rnet and aiosonic cost more than aiohttp (docs/performance.md). The gateway
makes such a call for every request it proxies and a chain request makes three, so the
client was the largest cost left in the gateway. What the services need is small: HTTP/1.1
to a known origin, whole bodies of known length, answers framed by ``Content-Length``,
chunks or close, timeouts, and a keep-alive pool; so that is all this is. No redirects,
cookies, proxies, HTTP/2, content decoding (no ``Accept-Encoding`` is sent, so a server
answers uncompressed) or streaming. ``https`` origins use the default TLS context.

Every failure to get an answer is a :class:`TransportError`; the subclasses say whether the
request left (:class:`ConnectError`: it did not) and whether time ran out (``TimeoutError``
subclasses), which is what the callers' retry policies decide on. A request that cannot be
sent as given is an :class:`InvalidRequestError` (a ``ValueError``). Requests pass through
middlewares (``telemetry.http_client``'s makes the CLIENT spans) as aiohttp's did.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

import httptools

# A connection idle longer than this is closed rather than reused: below uvicorn's keep-alive
# timeout (5 s), so a server never closes one the pool is about to send on (a POST on such a
# connection would fail, and is not retried).
KEEPALIVE_SECONDS = 4.0
# An answer larger than this is refused (the services' answers are a few kilobytes).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
USER_AGENT = "otel-lab"


# --------------------------------------------------------------------------- errors


class TransportError(Exception):
    """No usable answer came; the base of every failure the client raises."""


class ConnectError(TransportError):
    """No connection could be made (refused, unknown host, TLS failed): nothing was sent."""


class ConnectTimeout(ConnectError, TimeoutError):
    """No connection (or no free slot in the pool) in time: nothing was sent."""


class ReadTimeout(TransportError, TimeoutError):
    """The request was sent and no complete answer came in time."""


class NetworkError(TransportError):
    """The connection failed while the request was sent or the answer read."""


class RemoteProtocolError(TransportError):
    """The server closed the connection before a complete answer, or broke HTTP/1.1."""


class InvalidRequestError(ValueError):
    """The request cannot be sent as given (a line break in a header, not an http(s) URL):
    the caller's mistake, raised before anything is sent."""


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Origin:
    """Where a request goes: scheme, host and port (``http://127.0.0.1:8001``). A process
    has a few, so their forms are worked out once each (no ``slots``: ``cached_property``)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """The origin of ``url`` and its path (and query), as given."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequestError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port), target

    @cached_property
    def authority(self) -> str:
        """What the ``Host`` header says: the host, and the port unless the scheme's own."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @cached_property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"


@dataclass(slots=True)
class Request:
    """One request as the middlewares see it; they may add ``headers``."""

    method: str
    origin: Origin
    target: str  # the path and query, already encoded
    headers: dict[str, str]
    body: bytes = b""
    timeout: float = 5.0  # seconds for the whole exchange, connecting included


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer (the body is read before the connection goes back to the pool)."""

    status_code: int
    reason_phrase: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


Handler = Callable[[Request], Awaitable[Reply]]
Middleware = Callable[[Request, Handler], Awaitable[Reply]]


# --------------------------------------------------------------------------- connection


class _Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one exchange at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[Reply] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_only = False
        self._headers_done = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # nothing asked: a server must not speak first
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"malformed answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            self._fail(NetworkError(f"connection failed: {exc}"))
        elif self._parser is not None and self._ends_at_close():
            self._complete(self._parser)
        else:
            self._fail(RemoteProtocolError("server closed the connection before a complete answer"))

    def _ends_at_close(self) -> bool:
        """Whether the answer's body is framed by the connection's end (neither a length
        nor chunks, as HTTP/1.0 servers may answer): then the close completes it."""
        if not self._headers_done:
            return False
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_only:  # no body follows; httptools cannot be told so, so stop here
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(RemoteProtocolError(f"answer over {MAX_RESPONSE_BYTES} bytes"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser, answer = self._parser, self._answer
        if parser is None or answer is None or answer.done():
            return
        if 100 <= parser.get_status_code() < 200:
            # An interim answer (100 Continue): the final one follows, on the same parser.
            self._reason, self._headers, self._body = b"", [], []
            self._headers_done = False
            return
        self._complete(parser)

    def _complete(self, parser: httptools.HttpResponseParser) -> None:
        self._parser = None
        if self._head_only or not parser.should_keep_alive():
            self.close()
        if self._answer is not None and not self._answer.done():
            reply = Reply(
                parser.get_status_code(),
                self._reason.decode("latin-1"),
                tuple(self._headers),
                b"".join(self._body),
            )
            self._answer.set_result(reply)

    # the exchange

    def send(self, head: bytes, body: bytes, head_only: bool) -> asyncio.Future[Reply]:
        """Write the request; the future completes with the answer (or the failure)."""
        assert self.transport is not None
        self._answer = answer = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._reason, self._headers, self._body, self._size = b"", [], [], 0
        self._head_only, self._headers_done = head_only, False
        self.transport.write(head + body)
        return answer

    def _fail(self, error: TransportError) -> None:
        self._parser = None
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    def reusable(self, now: float) -> bool:
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < KEEPALIVE_SECONDS
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


# --------------------------------------------------------------------------- client


def _head(request: Request) -> bytes:
    """The request line and headers, with ``Host``, ``User-Agent`` and ``Content-Length``
    added unless given (latin-1, as HTTP/1.1 headers are)."""
    if not request.target.startswith("/") or any(c in request.target for c in " \r\n"):
        raise InvalidRequestError(f"not a request target: {request.target!r}")
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    given = set()
    for name, value in request.headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise InvalidRequestError(f"header {name!r} holds a line break or colon")
        lines.append(f"{name}: {value}")
        given.add(name.lower())
    if "host" not in given:
        lines.append(f"Host: {request.origin.authority}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {USER_AGENT}")
    if "content-length" not in given and (request.body or request.method not in _NO_BODY):
        lines.append(f"Content-Length: {len(request.body)}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f"request line or header not latin-1: {exc}") from None


_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class HTTPClient:
    """A keep-alive pool of HTTP/1.1 connections, at most ``max_connections`` open.

    Create and close it inside the running event loop (a lifespan); ``async with`` closes it.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 1.0,
        max_connections: int = 100,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        handler: Handler = self._exchange
        for middleware in reversed(middlewares):  # the first one given runs first
            handler = _wrap(middleware, handler)
        self._handler = handler

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def request(
        self,
        method: str,
        url: str | tuple[Origin, str],
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 5.0,
    ) -> Reply:
        """Send ``method`` to ``url`` (a URL, or an origin and an encoded path) and return the
        whole answer, whatever its status; raise a :class:`TransportError` when none came
        within ``timeout`` seconds (connecting included)."""
        if self._closed:
            raise InvalidRequestError("the client is closed")
        origin, target = Origin.of(url) if isinstance(url, str) else url
        request = Request(method, origin, target or "/", dict(headers or {}), body, timeout)
        return await self._handler(request)

    async def _exchange(self, request: Request) -> Reply:
        loop = asyncio.get_running_loop()
        until = loop.time() + request.timeout
        head = _head(request)
        connection = await self._checkout(request.origin, until)
        try:
            answer = connection.send(head, request.body, request.method == "HEAD")
            timer = loop.call_at(until, _time_out, answer, request.timeout)
            try:
                reply = await answer
            finally:
                timer.cancel()
        except BaseException:
            connection.close()  # an exchange cut short leaves the connection unusable
            self._slots.release()
            raise
        self._checkin(connection)
        return reply

    async def _checkout(self, origin: Origin, until: float) -> _Connection:
        """A free slot and a connection to ``origin``: the most recently used idle one that
        is still good, else a new one."""
        loop = asyncio.get_running_loop()
        if self._slots.locked():
            try:
                async with asyncio.timeout_at(until):
                    await self._slots.acquire()
            except TimeoutError:
                raise ConnectTimeout("no free connection in time") from None
        else:
            await self._slots.acquire()
        try:
            idle = self._idle.get(origin)
            now = time.monotonic()
            while idle:
                connection = idle.pop()
                if connection.reusable(now):
                    return connection
                connection.close()
            return await self._connect(origin, min(until, loop.time() + self.connect_timeout))
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self, origin: Origin, until: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            tls = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout_at(until):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin), origin.host, origin.port, ssl=tls
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {origin.url} in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {origin.url}: {exc}") from exc
        return connection

    def _checkin(self, connection: _Connection) -> None:
        self._slots.release()
        if connection.closed or self._closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin, []).append(connection)


def _wrap(middleware: Middleware, inner: Handler) -> Handler:
    async def handler(request: Request) -> Reply:
        return await middleware(request, inner)

    return handler


def _time_out(answer: asyncio.Future[Reply], seconds: float) -> None:
    if not answer.done():
        answer.set_exception(ReadTimeout(f"no complete answer within {seconds:.3g}s"))
