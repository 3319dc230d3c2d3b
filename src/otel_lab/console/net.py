"""Socket binding, kept free of heavy imports so a taken port is reported at once."""

from __future__ import annotations

import socket


class PortUnavailable(OSError):
    """The port cannot be bound; the message says which and what to do."""


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so port 0 works and 'port in use' is reported up front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror} "
            "(is another collector or console running? choose another port)"
        ) from None
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
