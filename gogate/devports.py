"""What development mode needs of the machine: ports that are free, and the moment the
gateway answers.

Development mode must start on a machine where other programs (another gateway, another
project) hold the usual ports: it checks the ports it was told to use before it starts
anything, so that a taken port stops it with one line and nothing to clean up, and picks free
ones for what nobody asked for. It prints its banner once the gateway answers ``/ready``,
which is after every bind succeeded.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Final

__all__ = ["check_free", "free_port", "loopback", "wait_ready"]

_POLL: Final = 0.05  # seconds between two looks at /ready


def _bind(host: str, port: int) -> int:
    """Bind (as the gateway does, with SO_REUSEADDR) and let go; the port bound."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        return int(probe.getsockname()[1])


def check_free(host: str, port: int) -> None:
    """Raise OSError (``Address already in use``) when ``host:port`` cannot be listened on."""
    _bind(host, port)


def free_port(host: str, preferred: int = 0) -> int:
    """``preferred`` when it is free on ``host``, else a free port the system picks."""
    if 0 < preferred <= 65535:
        try:
            return _bind(host, preferred)
        except OSError:
            pass
    return _bind(host, 0)


def loopback(host: str) -> str:
    """The address that reaches a listener bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return "::1" if host == "::" else host


async def wait_ready(host: str, port: int, *, tls: bool, proxy_protocol: bool,
                     timeout: float) -> bool:
    """Ask ``GET /ready`` until it answers 200 (True) or ``timeout`` seconds pass (False).

    With ``proxy_protocol`` every request starts with a PROXY header naming no client, as a
    proxy's own health check does."""
    context = None
    if tls:  # the development certificate is whatever was given: it is not checked here
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    preamble = b"PROXY UNKNOWN\r\n" if proxy_protocol else b""
    request = preamble + b"GET /ready HTTP/1.1\r\nHost: gogate\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), _POLL * 10)
            try:
                writer.write(request)
                status = await asyncio.wait_for(reader.readline(), _POLL * 10)
            finally:
                writer.close()
            if status.split(b" ")[1:2] == [b"200"]:
                return True
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(_POLL)
    return False
