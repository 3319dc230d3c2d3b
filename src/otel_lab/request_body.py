"""Request bodies read with a size limit: one implementation for the ASGI code of the
services (their body-limit middleware, the gateway's proxy) and of the console (its UI
guard, the OTLP receiver).

An oversized body is answered only after the rest of it is read and dropped (up to
:data:`DRAIN_BYTES`), so a client that sends the whole body before reading gets the 413
rather than a connection reset.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

DRAIN_BYTES = 64 * 1_048_576  # read (and drop) this much of an oversized body, at most


def too_large(max_bytes: int) -> str:
    """The words every 413 here uses."""
    return f"request body larger than {max_bytes} bytes"


def declared_over(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's ``Content-Length`` is over ``max_bytes`` already."""
    declared = next((v for n, v in scope["headers"] if n == b"content-length"), b"")
    return declared.isdigit() and int(declared) > max_bytes


class BodyTooLargeError(Exception):
    """The body grew past the limit (:func:`read_body`)."""


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole body; :class:`BodyTooLargeError` past ``max_bytes``, starlette's
    ``ClientDisconnect`` when the client leaves first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class LimitedBody:
    """One request's ``receive``, counting what the app reads against ``max_bytes``."""

    __slots__ = ("_receive", "max_bytes", "received")

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.received = 0

    async def drain(self) -> None:
        """Read and drop the rest of the body (up to :data:`DRAIN_BYTES`)."""
        message: Message = {"more_body": True}
        while message.get("more_body") and self.received <= DRAIN_BYTES:
            message = await self._receive()
            self.received += len(message.get("body", b""))

    async def receive(self) -> Message:
        """The app's ``receive``. A body that grows past the limit raises an
        ``HTTPException(413)``: what FastAPI's body reading lets through (it turns any other
        exception into a 400), so the app's HTTP error handler answers it in its own shape."""
        message = await self._receive()
        self.received += len(message.get("body", b""))
        if self.received > self.max_bytes:
            if message.get("more_body"):
                await self.drain()
            raise HTTPException(413, too_large(self.max_bytes))
        return message
