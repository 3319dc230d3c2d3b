"""Request-scoped values that every log line and span can read."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# A request ID from outside is kept only when it is a sane token: it ends up in logs,
# headers and span attributes, so CR/LF, spaces, non-ASCII and long values are refused.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def sanitize_request_id(value: str | bytes | None) -> str:
    """Return the inbound request ID if it is a safe token, otherwise a fresh one."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            value = None
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    # 128 random bits as 32 hex digits, like uuid4().hex, for a quarter of its cost (the
    # Mersenne Twister is not for secrets; a request ID is not one).
    return f"{random.getrandbits(128):032x}"
