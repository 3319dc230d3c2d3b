"""The OTLP/HTTP receiver: a bare ASGI app (no framework) because it is the hot path.

It decodes in the request and hands rows to the store's writer thread, so an exporter
gets its answer as soon as the batch is queued. It also recognises the most common
misconfiguration, an OTLP/gRPC exporter pointed at the HTTP port, and answers such a
client in its own protocol with a status that says what to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from google.rpc import status_pb2
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from otel_lab.console import otlp
from otel_lab.console.security import bearer_ok
from otel_lab.console.store import Store
from otel_lab.http_protocol import JsonErrorsProtocol
from otel_lab.jsontypes import JSONObject
from otel_lab.request_body import BodyStalledError, BodyTooLargeError, read_body

log = logging.getLogger("otel_lab.console.receiver")

ROUTES: dict[str, otlp.Signal] = {
    "/v1/traces": "traces",
    "/v1/metrics": "metrics",
    "/v1/logs": "logs",
}
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
# Compressed bodies larger than this are refused before they are read to the end.
MAX_BODY_BYTES = 32 * 1024 * 1024
RETRY_AFTER_SECONDS = 1
# Bodies above this (a few hundred spans) are decoded in a worker thread. The GIL still
# serialises the work, but the event loop gets its turn every switch interval, so API
# requests keep answering in tens of ms while exporters send large batches; small bodies
# decode inline, where a thread hand-off would cost more than the decode.
DECODE_IN_THREAD_BYTES = 64 * 1024

# google.rpc.Code values used in error bodies.
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
UNAVAILABLE = 14
UNAUTHENTICATED = 16


def grpc_hint(server: tuple[str, int | None] | None) -> str:
    """What a gRPC client is told: this port speaks OTLP/HTTP, and how to configure for it."""
    host, port = server if server else ("<host>", None)
    host = f"[{host}]" if ":" in host else host
    where = f"port {port}" if port else "this port"
    endpoint = f"http://{host}:{port}" if port else "http://<host>:<port>"
    return (
        f"This is the Otel Lab console's OTLP/HTTP receiver on {where}; it does not speak "
        "OTLP/gRPC. Configure the exporter for OTLP/HTTP: "
        f"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} "
        "(paths /v1/traces, /v1/metrics, /v1/logs). gRPC collectors listen on 4317."
    )


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
    ]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_error(status_code: int, message: str) -> bytes:
    return json.dumps({"code": status_code, "message": message}).encode()


async def _send_status(
    send: Send,
    http_status: int,
    rpc_code: int,
    message: str,
    media_type: str | None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An OTLP error: a google.rpc.Status in the request's encoding (JSON if unknown)."""
    if media_type in PROTOBUF_TYPES:
        body = status_pb2.Status(code=rpc_code, message=message).SerializeToString()
        await _send(send, http_status, body, media_type, extra)
    else:
        await _send(send, http_status, _json_error(rpc_code, message), "application/json", extra)


def _decode(signal: otlp.Signal, body: bytes, encoding: str, fmt: otlp.Format) -> otlp.Batch:
    message = otlp.parse_request(signal, otlp.decompress(body, encoding), fmt)
    return otlp.DECODERS[signal](message)


@dataclass
class _Head:
    """The request headers the receiver reads."""

    content_type: str = ""
    encoding: str = ""
    content_length: int = 0
    authorization: str | None = None

    @property
    def media_type(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    @classmethod
    def of(cls, headers: Iterable[tuple[bytes, bytes]]) -> _Head:
        head = cls()
        for name, value in headers:
            if name == b"authorization":
                head.authorization = value.decode("latin-1")
            elif name == b"content-type":
                head.content_type = value.decode("latin-1")
            elif name == b"content-encoding":
                head.encoding = value.decode("latin-1").strip().lower()
            elif name == b"content-length" and value.isdigit():
                head.content_length = int(value)
        return head


class OtlpReceiver:
    """ASGI app for POST /v1/traces, /v1/metrics and /v1/logs."""

    def __init__(self, store: Store, ui_url: str | None = None, token: str | None = None) -> None:
        self.store = store
        self.ui_url = ui_url
        self.token = token
        # One thread decodes the big bodies, one at a time: decoding holds the GIL, so more
        # threads would not decode faster, but with several (asyncio's default pool) a
        # burst had several requests' rows alive at once, and the Python heap and glibc's
        # arenas stayed at that high-water mark after it (docs/reliability.md).
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="otlp-decode")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        signal = ROUTES.get(path.rstrip("/") or "/")
        if signal is None:
            await self._not_found(scope, send)
            return
        if scope["method"] != "POST":
            await _send(
                send,
                405,
                _json_error(UNIMPLEMENTED, f"{path} accepts POST only"),
                "application/json",
                [(b"allow", b"POST")],
            )
            return

        head = _Head.of(scope["headers"])
        fmt = await self._admit(scope, send, head)
        if fmt is None:
            return
        batch = await self._receive(receive, send, signal, head, fmt)
        if batch is None:
            return
        if not self.store.submit(batch):
            await _send_status(
                send,
                503,
                UNAVAILABLE,
                f"the console's write queue is full ({self.store.max_pending_rows} rows); "
                f"retry after {RETRY_AFTER_SECONDS}s",
                head.media_type,
                [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
            )
            return
        response = otlp.build_response(signal, batch)
        await _send(send, 200, otlp.serialize(response, fmt), head.media_type)

    async def _admit(self, scope: Scope, send: Send, head: _Head) -> otlp.Format | None:
        """The request's format, or None after answering why it is refused."""
        media_type = head.media_type
        if self.token is not None and not bearer_ok(head.authorization, self.token):
            await _send_status(
                send,
                401,
                UNAUTHENTICATED,
                "this console needs a token: set OTEL_EXPORTER_OTLP_HEADERS="
                "'Authorization=Bearer <token>' on the exporter",
                media_type if media_type in PROTOBUF_TYPES else None,
                [(b"www-authenticate", b"Bearer")],
            )
            return None
        if media_type.startswith("application/grpc"):
            hint = grpc_hint(scope.get("server"))
            await _send(
                send,
                415,
                hint.encode(),
                "text/plain; charset=utf-8",
                [(b"grpc-status", str(UNIMPLEMENTED).encode()), (b"grpc-message", hint.encode())],
            )
            return None
        fmt: otlp.Format | None = (
            "proto" if media_type in PROTOBUF_TYPES
            else "json" if media_type == "application/json" else None
        )  # fmt: skip
        if fmt is None:
            await _send_status(
                send,
                415,
                INVALID_ARGUMENT,
                f"unsupported Content-Type {head.content_type or '(none)'!r}: OTLP/HTTP accepts "
                "application/x-protobuf or application/json",
                None,
            )
            return None
        if head.encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            await _send_status(
                send,
                415,
                INVALID_ARGUMENT,
                f"unsupported Content-Encoding {head.encoding!r}: use gzip or none",
                media_type,
            )
            return None
        if head.content_length > MAX_BODY_BYTES:
            await self._too_large(send, media_type)
            return None
        return fmt

    async def _receive(
        self, receive: Receive, send: Send, signal: otlp.Signal, head: _Head, fmt: otlp.Format
    ) -> otlp.Batch | None:
        """The body, decoded; or None after answering why it cannot be."""
        media_type, encoding = head.media_type, head.encoding
        try:
            body = await read_body(receive, MAX_BODY_BYTES)
        except BodyTooLargeError:
            await self._too_large(send, media_type)
            return None
        except BodyStalledError as exc:
            await _send_status(send, 408, DEADLINE_EXCEEDED, exc.detail, media_type)
            return None
        except ClientDisconnect:
            return None
        try:
            compressed = encoding not in ("", "identity")
            if len(body) > (DECODE_IN_THREAD_BYTES // 8 if compressed else DECODE_IN_THREAD_BYTES):
                # Big batches decode off the event loop, which the API port shares.
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._decoder, _decode, signal, body, encoding, fmt
                )
            return _decode(signal, body, encoding, fmt)
        except otlp.DecodeError as exc:
            await _send_status(send, 400, INVALID_ARGUMENT, str(exc), media_type)
        except otlp.BodyTooLarge:
            await self._too_large(send, media_type)
        return None

    async def _too_large(self, send: Send, media_type: str) -> None:
        await _send_status(
            send,
            413,
            RESOURCE_EXHAUSTED,
            f"body too large (limit {MAX_BODY_BYTES} bytes, {otlp.MAX_DECODED_BYTES} decompressed)",
            media_type,
        )

    async def _not_found(self, scope: Scope, send: Send) -> None:
        info: JSONObject = {
            "service": "otel-lab console: OTLP/HTTP receiver",
            "endpoints": {f"POST {p}": s for p, s in ROUTES.items()},
            "content_types": ["application/x-protobuf", "application/json"],
        }
        if self.ui_url:
            info["ui"] = self.ui_url
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            await _send(send, 200, json.dumps(info).encode(), "application/json")
            return
        info["detail"] = f"no such path {scope['path']!r}"
        await _send(send, 404, json.dumps(info).encode(), "application/json")


# --------------------------------------------------------------------------- gRPC hint

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _GrpcHintConnection:
    """Speaks just enough HTTP/2 to fail every gRPC call with UNIMPLEMENTED and the hint."""

    def __init__(self, transport: asyncio.Transport, server: tuple[str, int | None] | None) -> None:
        self.transport = transport
        self.hint = grpc_hint(server)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.conn.initiate_connection()

    def received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._answer(event)
            elif isinstance(event, h2.events.DataReceived):
                # The stream may already be closed on our side; the window update is moot then.
                with contextlib.suppress(h2.exceptions.H2Error):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self.transport.close()
                return
        self._flush()

    def _answer(self, event: h2.events.RequestReceived) -> None:
        headers = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in event.headers or []
        }
        log.warning(
            "gRPC request %s on the OTLP/HTTP port: answered UNIMPLEMENTED with a hint",
            headers.get(":path", "?"),
        )
        if headers.get("content-type", "").startswith("application/grpc"):
            # A trailers-only response: the RPC fails with this status and message.
            self.conn.send_headers(
                event.stream_id,
                [
                    (":status", "200"),
                    ("content-type", "application/grpc"),
                    ("grpc-status", str(UNIMPLEMENTED)),
                    ("grpc-message", _grpc_percent_encode(self.hint)),
                ],
                end_stream=True,
            )
            return
        body = self.hint.encode()
        self.conn.send_headers(
            event.stream_id,
            [
                (":status", "505"),
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", str(len(body))),
            ],
        )
        self.conn.send_data(event.stream_id, body, end_stream=True)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)


def _grpc_percent_encode(text: str) -> str:
    """grpc-message is percent-encoded outside printable ASCII (and '%' itself)."""
    out = []
    for byte in text.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


# The google.rpc.Code of each error the protocol answers itself (gRPC's own servers answer
# RESOURCE_EXHAUSTED for metadata over their limit).
_PROTOCOL_ERROR_CODES = {400: INVALID_ARGUMENT, 408: DEADLINE_EXCEEDED, 431: RESOURCE_EXHAUSTED}


class OtlpHttpProtocol(JsonErrorsProtocol):
    """uvicorn's httptools protocol with the services' limits, plus: a connection that opens
    with the HTTP/2 preface (a gRPC exporter) is answered over HTTP/2 with the hint instead
    of a bare 400; a request it cannot parse (400), a head too large (431) or too slow (408)
    gets a google.rpc.Status in JSON, as the receiver's errors."""

    def error_response_body(self, status: int, message: str) -> bytes:
        return _json_error(_PROTOCOL_ERROR_CODES[status], message)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._sniffing = True
        self._sniffed = b""
        self._grpc: _GrpcHintConnection | None = None

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()  # armed at connect; the gRPC path skips uvicorn's
        if self._grpc is not None:
            self._grpc.received(data)
            return
        if self._sniffing:
            data = self._sniffed + data
            n = min(len(data), len(HTTP2_PREFACE))
            if data[:n] == HTTP2_PREFACE[:n]:
                if n < len(HTTP2_PREFACE):
                    self._sniffed = data
                    return
                self._grpc = _GrpcHintConnection(self.transport, self.server)
                self._grpc.received(data)
                return
            self._sniffing = False
            self._sniffed = b""
        super().data_received(data)
