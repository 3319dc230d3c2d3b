"""Request bodies read with a size limit: one implementation for the ASGI code of the
services (their body-limit middleware, the gateway's proxy) and of the console (its UI
guard, the OTLP receiver).

An oversized body is answered only after the rest of it is read and dropped (up to
:data:`DRAIN_BYTES`), so a client that sends the whole body before reading gets the 413
rather than a connection reset.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

DRAIN_BYTES = 64 * 1_048_576  # read (and drop) this much of an oversized body, at most
# A client that stops sending its body part-way gets a 408 after this long without a byte
# (nginx's client_body_timeout, also per read); uvicorn itself would wait for it forever.
BODY_IDLE_SECONDS = 10.0


def too_large(max_bytes: int) -> str:
    """The words every 413 here uses."""
    return f"request body larger than {max_bytes} bytes"


def declared_over(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's ``Content-Length`` is over ``max_bytes`` already."""
    declared = next((v for n, v in scope["headers"] if n == b"content-length"), b"")
    return declared.isdigit() and int(declared) > max_bytes


class BodyTooLargeError(Exception):
    """The body grew past the limit (:func:`read_body`)."""


class BodyStalledError(HTTPException):
    """No part of the body arrived for a while: a 408, in each app's error shape
    (an ``HTTPException``, which FastAPI's body reading lets through)."""

    def __init__(self, idle_seconds: float) -> None:
        super().__init__(408, f"the request body stopped arriving (nothing for {idle_seconds:g} s)")


async def next_message(receive: Receive) -> Message:
    """``receive()``, or :class:`BodyStalledError` after :data:`BODY_IDLE_SECONDS` without
    a message."""
    idle_seconds = BODY_IDLE_SECONDS
    try:
        async with asyncio.timeout(idle_seconds):
            return await receive()
    except TimeoutError:
        raise BodyStalledError(idle_seconds) from None


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole body; :class:`BodyTooLargeError` past ``max_bytes``, starlette's
    ``ClientDisconnect`` when the client leaves first, :class:`BodyStalledError` when it
    stops sending."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await next_message(receive)
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

    __slots__ = ("_receive", "complete", "max_bytes", "received")

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.received = 0
        # Once the body is whole, receive() waits for the disconnect (a streaming response
        # listens for it), for as long as the response takes: no idle limit then.
        self.complete = False

    async def drain(self) -> None:
        """Read and drop the rest of the body (up to :data:`DRAIN_BYTES`)."""
        message: Message = {"more_body": True}
        while message.get("more_body") and self.received <= DRAIN_BYTES:
            message = await next_message(self._receive)
            self.received += len(message.get("body", b""))

    async def receive(self) -> Message:
        """The app's ``receive``. A body that grows past the limit raises an
        ``HTTPException(413)``: what FastAPI's body reading lets through (it turns any other
        exception into a 400), so the app's HTTP error handler answers it in its own shape;
        so is a body that stops arriving (:class:`BodyStalledError`)."""
        if self.complete:
            return await self._receive()
        message = await next_message(self._receive)
        self.complete = not message.get("more_body", False)
        self.received += len(message.get("body", b""))
        if self.received > self.max_bytes:
            if message.get("more_body"):
                await self.drain()
            raise HTTPException(413, too_large(self.max_bytes))
        return message
