"""uvicorn's HTTP protocol with JSON for the requests it cannot parse.

A request line or framing that httptools refuses (an unknown method, raw non-ASCII bytes in
the path, a negative or doubled ``Content-Length``, a bad chunk) never reaches the app:
uvicorn answers it itself, with a ``text/plain`` 400. Every other 4xx of the services and
the console is JSON, so this one is too. Served with ``uvicorn --http
otel_lab.http_protocol:JsonErrorsProtocol`` (``registry.HTTP_PROTOCOL``; the image sets
``UVICORN_HTTP`` to it for the compose and Kubernetes commands); the
console's OTLP port answers in its own shape (``console.receiver.OtlpHttpProtocol``).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class JsonErrorsProtocol(HttpToolsProtocol):
    @staticmethod
    def bad_request_body(message: str) -> bytes:
        """The services' error shape (``services.errors``); no request, so no request ID."""
        return json.dumps(
            {"detail": message, "error_type": "bad_request", "request_id": None}
        ).encode()

    def send_400_response(self, msg: str) -> None:
        body = self.bad_request_body(msg)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
