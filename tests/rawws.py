"""A minimal RFC 6455 client for the tests (:class:`RawClient`), shared by ``test_lifetime.py``
and ``test_robustness.py``.

Frames are built by hand (:func:`frame`), so that a test can send what no well-behaved library
would, stop reading altogether, or open the socket with a tiny receive window. The client never
answers pings unless told to. :class:`RawClients` opens clients for a test and closes them all
at its end (each test module wraps it in its own ``raw_clients`` fixture).

The helpers both modules wait with are here too: :func:`eventually`, :class:`Collector` (reads
a ``websockets`` client in the background) and :func:`wait_for_tokens` (the dev tokens a
``gogate --dev`` process prints).

This is a helper module, not a test file: pytest collects nothing from it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import websockets
from conftest import Client

# --- the client -----------------------------------------------------------------------------

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """One masked client frame. ``rsv`` is the 3-bit RSV field (4 = RSV1); ``length`` claims
    a payload length other than the real one (to send a header alone)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = bytes((first, 0x80 | 126)) + struct.pack("!H", size)
    else:
        header = bytes((first, 0x80 | 127)) + struct.pack("!Q", size)
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def event_bytes(event: str, data: dict[str, Any], ref: Any = None) -> bytes:
    body: dict[str, Any] = {"event": event, "data": data}
    if ref is not None:
        body["ref"] = ref
    return json.dumps(body).encode()


class Closed(Exception):
    """The server closed: ``code`` from its close frame, or None when the socket just ended."""

    def __init__(self, code: int | None, reason: bytes = b"") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class RawClient:
    """A WebSocket client over ``asyncio.open_connection``: handshake, hand-built frames.
    It reads only when told to, and never answers pings unless told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()  # bytes taken from the socket, not yet a whole frame
        self.pings = 0  # pings that recv() passed over

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        """Connect and handshake. ``rcvbuf`` makes the receive window (and the stream reader's
        read-ahead) that small, so that a client that stops reading is felt quickly."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so that the window is small from the start. On loopback the MSS
            # is 64 KiB and the server's send buffer grows with it to megabytes; a small MSS
            # announced in our SYN keeps the server's kernel buffer small too, so a consumer
            # that stops reading is felt after tens of kilobytes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if hasattr(socket, "TCP_MAXSEG"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # A small stream-reader limit too, so that asyncio does not read far ahead for us.
        reader, writer = await asyncio.open_connection(
            sock=sock, limit=rcvbuf if rcvbuf is not None else 2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                      ).encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status, *lines = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101"), head
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, head
        return cls(reader, writer)

    def send(self, *frames: bytes) -> None:
        for data in frames:
            self.writer.write(data)

    def send_event(self, event: str, data: dict[str, Any], ref: Any = None) -> None:
        self.send(frame(TEXT, event_bytes(event, data, ref)))

    def _parse(self) -> tuple[bool, int, bytes] | None:
        """One whole frame from the buffer, consumed; None when it is not all there yet."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        size, offset = buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, offset = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, offset = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < offset + size:
            return None
        assert not buf[1] & 0x80, "server frames must not be masked"
        result = bool(buf[0] & 0x80), buf[0] & 0x0F, bytes(buf[offset:offset + size])
        del buf[:offset + size]
        return result

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """The next frame: (fin, opcode, payload); raises Closed at a close frame or at the end
        of the stream. Safe to cancel: bytes are kept until a whole frame is there."""
        while (parsed := self._parse()) is None:
            try:
                chunk = await self.reader.read(4096)
            except ConnectionError as exc:
                raise Closed(None) from exc
            if not chunk:
                raise Closed(None)
            self.buffer += chunk
        fin, opcode, payload = parsed
        if opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            raise Closed(code, payload[2:])
        return fin, opcode, payload

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event. Pings are counted (``self.pings``) and left unanswered, pongs are
        skipped; any other frame than text fails the test."""
        async def next_event() -> dict[str, Any]:
            while True:
                _, opcode, payload = await self.read_frame()
                if opcode == PING:
                    self.pings += 1
                    continue
                if opcode == PONG:
                    continue
                assert opcode == TEXT, (opcode, payload[:100])
                event: dict[str, Any] = json.loads(payload)
                return event

        return await asyncio.wait_for(next_event(), timeout)

    async def expect(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        got = await self.recv(timeout)
        assert got["event"] == event, got
        return got

    async def auth(self, token: str) -> dict[str, Any]:
        """Authenticate; the ``auth_success`` event's data."""
        self.send_event("auth", {"token": token})
        data: dict[str, Any] = (await self.expect("auth_success"))["data"]
        return data

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; its close code, or None when the socket just ended."""
        async def drain() -> int | None:
            while True:
                try:
                    await self.read_frame()
                except Closed as closed:
                    return closed.code

        return await asyncio.wait_for(drain(), timeout)

    async def drain_events(self, timeout: float = 10.0) -> tuple[list[dict[str, Any]], int | None]:
        """Everything the server sent until it closed: the events, then the close code (None
        when the connection ended without a close frame, e.g. reset)."""
        events: list[dict[str, Any]] = []

        async def drain() -> int | None:
            while True:
                try:
                    _, opcode, payload = await self.read_frame()
                except Closed as closed:
                    return closed.code
                if opcode == TEXT:
                    events.append(json.loads(payload))

        code = await asyncio.wait_for(drain(), timeout)
        return events, code

    def close(self) -> None:
        self.writer.close()


class RawClients:
    """Opens :class:`RawClient` s for one test (``await raw_clients(port, rcvbuf=4096)``) and
    closes them all at its end (:meth:`close`)."""

    def __init__(self) -> None:
        self.opened: list[RawClient] = []

    async def __call__(self, port: int, **kwargs: Any) -> RawClient:
        client = await RawClient.open(port, **kwargs)
        self.opened.append(client)
        return client

    def close(self) -> None:
        for client in self.opened:
            client.close()


# --- waiting ------------------------------------------------------------------------------


async def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Collector:
    """Reads a websockets client continuously in the background, keeping every event."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                self.events.append(json.loads(await self.client.ws.recv()))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def stop(self) -> None:
        self.task.cancel()


TOKEN_LINE = re.compile(r"^\s*user (\d+) [^:]*: (\S+)\s*$", re.MULTILINE)


async def wait_for_tokens(proc: Any, timeout: float = 10.0) -> dict[int, str]:
    """The tokens a ``gogate --dev`` process prints at start, by user id (all four users)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {int(uid): token for uid, token in TOKEN_LINE.findall(proc.output())}
        if len(found) >= 4:
            return found
        assert time.monotonic() < deadline, proc.output()
        await asyncio.sleep(0.05)
