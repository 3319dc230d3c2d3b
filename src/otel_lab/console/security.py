"""Access control for the console's two ports.

- **Token** (optional, ``--token`` / ``CONSOLE_TOKEN``): OTLP requests need
  ``Authorization: Bearer <token>``; the UI and API accept the same header, or a session
  cookie set by the login page (or by opening any page once with ``?token=``). The cookie
  holds an HMAC of the token, not the token. Comparisons are constant-time.
- **Loopback by default**: bound to 127.0.0.1 without a token, the UI still checks the
  ``Host`` header, so a web page cannot read the API through DNS rebinding, and checks
  ``Origin`` on POSTs, so a web page cannot clear or import data by cross-site request.
- **Headers**: a strict Content-Security-Policy (scripts only from the console itself, no
  inline script), so even a value that escaped escaping could not run; ``nosniff``; no
  framing. ``Server-Timing: app;dur=<ms>`` reports the server's own time (the benchmark
  reads it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otel_lab.request_body import LimitedBody, declared_over, too_large

COOKIE = "otel_lab_console"
PUBLIC_PREFIXES = ("/static/", "/login", "/api/health", "/favicon.ico")
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
# Request bodies: the API's JSON and the login form are small; /api/import reads files up
# to its own limit. A bigger body is drained and answered 413 (otel_lab.request_body).
MAX_BODY_BYTES = 1_048_576
OWN_BODY_LIMIT = ("/api/import",)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_ok(header: str | None, token: str) -> bool:
    """True when an Authorization header carries this bearer token."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def session_value(token: str) -> str:
    """The cookie value for a token (an HMAC, so the cookie does not reveal the token)."""
    return hmac.new(token.encode(), b"otel-lab-console-session", hashlib.sha256).hexdigest()


def session_cookie(token: str) -> str:
    return f"{COOKIE}={session_value(token)}; Path=/; HttpOnly; SameSite=Strict"


@dataclass(frozen=True)
class Security:
    token: str | None = None
    bind_host: str = "127.0.0.1"

    @property
    def check_host(self) -> bool:
        """Guard against DNS rebinding when the console relies on loopback alone."""
        return self.token is None and is_loopback(self.bind_host)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _host_only(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class UiGuard:
    """ASGI middleware for the UI port: token, Host and Origin checks, security headers."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        host = _header(scope, b"host") or ""
        sec = self.security
        if sec.check_host and host and not is_loopback(_host_only(host)):
            await _reject(
                send, 403, f"host {host!r} refused: the console answers loopback names only "
                "(start it with --token to serve other names)", path
            )  # fmt: skip
            return
        if method not in ("GET", "HEAD", "OPTIONS"):
            origin = _header(scope, b"origin")
            if origin and origin != "null" and urlsplit(origin).netloc != host:
                await _reject(send, 403, f"cross-origin {method} from {origin!r} refused", path)
                return
            if origin == "null":
                await _reject(send, 403, f"{method} from an opaque origin refused", path)
                return
        if sec.token is not None and not path.startswith(PUBLIC_PREFIXES):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if (
                method == "GET"
                and "token" in query
                and hmac.compare_digest(query["token"].encode(), sec.token.encode())
            ):
                query.pop("token")
                location = path + ("?" + urlencode(query) if query else "")
                await _redirect(send, location, session_cookie(sec.token))
                return
            authorised = bearer_ok(_header(scope, b"authorization"), sec.token) or (
                hmac.compare_digest(
                    (_cookie(scope, COOKIE) or "").encode(), session_value(sec.token).encode()
                )
            )
            if not authorised:
                if path.startswith("/api/") or method != "GET":
                    await _reject(
                        send, 401, "this console needs a token: send 'Authorization: Bearer "
                        "<token>' or log in at /login", path, [(b"www-authenticate", b"Bearer")]
                    )  # fmt: skip
                else:
                    qs = scope.get("query_string", b"").decode("latin-1")
                    target = path + ("?" + qs if qs else "")
                    await _redirect(send, "/login?next=" + quote(target, safe=""))
                return

        if method not in ("GET", "HEAD", "OPTIONS") and not path.startswith(OWN_BODY_LIMIT):
            limited = await _body_limited(scope, receive, send, path)
            if limited is None:
                return
            receive = limited

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                elapsed = (time.perf_counter() - started) * 1000
                headers += [
                    (b"server-timing", f"app;dur={elapsed:.2f}".encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not any(k == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _body_limited(scope: Scope, receive: Receive, send: Send, path: str) -> Receive | None:
    """``receive`` limited to :data:`MAX_BODY_BYTES`, or None once a body declared bigger was
    answered 413. A streamed body that grows past the limit ends in a 413 from the app's
    HTTP error handler (an HTTPException is what FastAPI's body reading lets through)."""
    body = LimitedBody(receive, MAX_BODY_BYTES)
    if declared_over(scope, MAX_BODY_BYTES):
        await body.drain()
        await _reject(send, 413, too_large(MAX_BODY_BYTES), path)
        return None
    return body.receive


async def _reject(
    send: Send, status: int, detail: str, path: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    if path.startswith("/api/"):
        body = json.dumps({"detail": detail}).encode()
        content_type = b"application/json"
    else:
        body = detail.encode()
        content_type = b"text/plain; charset=utf-8"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff"), *(extra or [])]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, cookie: str | None = None) -> None:
    headers = [(b"location", location.encode("latin-1", "replace")), (b"content-length", b"0")]
    if cookie:
        headers.append((b"set-cookie", cookie.encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
