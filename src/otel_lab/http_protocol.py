"""uvicorn's HTTP protocol with JSON for the requests it answers itself, and limits on the
request head.

A request line or framing that httptools refuses (an unknown method, raw non-ASCII bytes in
the path, a negative or doubled ``Content-Length``, a bad chunk) never reaches the app:
uvicorn answers it itself, with a ``text/plain`` 400. Every other 4xx of the services and
the console is JSON, so this one is too. httptools has no limit on the size of a request
head (h11 has ``max_incomplete_event_size``): a megabyte of headers was read, buffered and
handed to the app, and a head that never ended held its connection forever. Here a head
over :data:`MAX_HEAD_BYTES` gets a 431 and one not complete within :data:`HEAD_SECONDS` a
408, before any app code runs. Served with ``uvicorn --http
otel_lab.http_protocol:JsonErrorsProtocol`` (``registry.HTTP_PROTOCOL``; the image sets
``UVICORN_HTTP`` to it for the compose and Kubernetes commands); the
console's OTLP port answers in its own shape (``console.receiver.OtlpHttpProtocol``).

uvicorn imports this module at start-up in every process: it imports nothing uvicorn does not.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from otel_lab.jsontypes import JSONObject

# The request line and headers together, as sent (each header as ``name: value\r\n``). 16 KiB
# is h11's default (so uvicorn's other HTTP implementation) and Node's; nginx reads up to
# 4 x 8 KiB, gunicorn 100 fields of 8 KiB, Go up to 1 MiB. Browsers send every cookie of
# ``localhost`` to every port of it, so a developer's console gets a few KiB of other apps'
# cookies: 16 KiB leaves room for them and for a large bearer token.
MAX_HEAD_BYTES = 16 * 1024
# A request head not complete this long after its first byte gets a 408 (Node's
# headersTimeout, nginx's client_header_timeout; both 60 s). Every client here sends its
# head in one write; 10 s, as ``request_body.BODY_IDLE_SECONDS``, is ample.
HEAD_SECONDS = 10.0


def error_type_for(status: int) -> str:
    """The ``error_type`` of an HTTP status answered without a more specific one."""
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def error_body(detail: str, error_type: str, request_id: str | None = None) -> JSONObject:
    """The services' error shape (``services.errors``), also the gateway's and the console
    UI port's protocol-level errors; defined here, where uvicorn imports it before any app."""
    return {"detail": detail, "error_type": error_type, "request_id": request_id}


class JsonErrorsProtocol(HttpToolsProtocol):
    """httptools' protocol with JSON errors and the request head's size and time limits.

    The limits cost little on the hot path (under a microsecond a request, docs/reliability.md):
    a head that starts and ends within one read no larger than the limit cannot be over it,
    so only a head whose read was larger, or that spanned reads, is measured when complete; a
    read that ends inside a head counts towards it, which bounds what httptools buffers of a
    head that never ends, and starts the head's clock. A head is open while uvicorn's scope
    for it has no ``method`` yet (uvicorn adds it when the headers are complete).
    """

    _measure_head = False  # a head completed in this read may be over the limit
    _head_refused = False
    _spilled_head: object = None  # the scope of the open head counted in _head_spill
    _head_spill = 0  # the open head's bytes in the reads after the one it began in

    def error_response_body(self, status: int, message: str) -> bytes:
        """The body of an error the protocol answers itself: no request, so no request ID."""
        return json.dumps(error_body(message, error_type_for(status))).encode()

    def send_error_response(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` and close: the connection's framing is lost."""
        body = self.error_response_body(status, message)
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools refused, or that ``on_headers_complete``
        refused (an exception in a callback stops the parser and arrives here)."""
        if self._head_refused:
            self._refuse_head()
        else:
            self.send_error_response(400, msg)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its idle timeout only after a response: a connection that never
        # sent a byte was held forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        scope = self.scope
        self._measure_head = len(data) > MAX_HEAD_BYTES or (
            scope is not None and "method" not in scope
        )
        super().data_received(data)
        scope = self.scope
        if scope is not None and "method" not in scope and not self.transport.is_closing():
            self._read_ended_in_head(scope, len(data))

    def on_headers_complete(self) -> None:
        if self._measure_head and self._head_size() > MAX_HEAD_BYTES:
            self._head_refused = True
            raise ValueError("request head too large")  # stops httptools: see send_400_response
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _read_ended_in_head(self, scope: object, size: int) -> None:
        if self._spilled_head is not scope:  # the head began in this read
            self._spilled_head, self._head_spill = scope, 0
            self.loop.call_later(HEAD_SECONDS, self._head_timed_out, scope)
            return
        self._head_spill += size  # all of this read was head
        if self._head_spill > MAX_HEAD_BYTES:
            self._refuse_head()

    def _refuse_head(self) -> None:
        message = f"request line and headers larger than {MAX_HEAD_BYTES} bytes"
        self.logger.warning("%s: 431", message)
        self.send_error_response(431, message)

    def _head_timed_out(self, scope: object) -> None:
        if self.scope is not scope or "method" in scope or self.transport.is_closing():
            return  # complete (or the connection closed) in time
        if self.flow.read_paused or not (self.cycle is None or self.cycle.response_complete):
            # An earlier request on this connection is still being answered: the head waits
            # for this server, not for the client.
            self.loop.call_later(HEAD_SECONDS, self._head_timed_out, scope)
            return
        message = f"the request headers did not arrive within {HEAD_SECONDS:g} s"
        self.logger.warning("%s: 408", message)
        self.send_error_response(408, message)
