"""The bus between the workers of one host and their supervisor: binary frames over a Unix
domain socket.

A frame is a 4-byte big-endian length followed by one msgpack-encoded message (a tagged
array). Workers tell the supervisor which users they hold (``Acquire`` / ``Release``) and hand
it the events whose receivers may sit elsewhere (``Publish``); the supervisor forwards each
event only to the workers holding one of its receivers, so every connection receives it once.
With recovery on, the supervisor is also the host's stream authority: it numbers each stream
event (``Publish.offsets``), answers where a user's stream stands with the slot (``Granted``),
serves catch-ups (``Replay``) and announces replaced streams (``StreamReset``).
The worker's end is :mod:`gogate.cluster.link`, the supervisor's :mod:`gogate.cluster.host`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Final

import msgspec

__all__ = [
    "Acquire",
    "BusProtocol",
    "CloseNow",
    "Delivered",
    "Drained",
    "Granted",
    "Hello",
    "Invalidate",
    "Message",
    "MetricsReply",
    "MetricsRequest",
    "Publish",
    "PublishChat",
    "Release",
    "Replay",
    "Replayed",
    "Revocations",
    "Revoke",
    "Revoked",
    "StreamReset",
    "decode",
    "encode",
]

_LENGTH: Final = struct.Struct(">I")
MAX_FRAME: Final = 64 * 1024 * 1024


class Hello(msgspec.Struct, tag="hello", array_like=True):
    """A worker announces itself (first frame on its connection)."""

    worker: int
    pid: int


class Acquire(msgspec.Struct, tag="acq", array_like=True):
    """A worker asks to hold one more connection of ``user_id`` (``limit`` 0 = unlimited),
    and for the events of the user's stream after ``since`` (epoch, offset) when given."""

    request: int
    user_id: int
    limit: int
    since: tuple[str, int] | None = None


class Granted(msgspec.Struct, tag="grant", array_like=True):
    """The supervisor's answer to the worker's ``Acquire`` numbered ``request``: the slot,
    and the user's stream once it was counted (``epoch`` None: not numbered), with the events
    after ``since`` when they could all be given (``recovered``)."""

    request: int
    ok: bool
    epoch: str | None = None
    offset: int = 0
    recovered: bool | None = None
    events: list[tuple[int, bytes]] = []


class Replay(msgspec.Struct, tag="replay", array_like=True):
    """A worker asks for the kept events of a user's stream ``epoch`` after ``offset``."""

    request: int
    user_id: int
    epoch: str
    offset: int


class Replayed(msgspec.Struct, tag="replayed", array_like=True):
    """The answer to ``Replay`` numbered ``request``: the events, or None when they cannot all
    be given."""

    request: int
    events: list[tuple[int, bytes]] | None


class StreamReset(msgspec.Struct, tag="sreset", array_like=True):
    """The user's stream was replaced: its connections continue from ``offset`` of
    ``epoch``."""

    user_id: int
    epoch: str
    offset: int


class Release(msgspec.Struct, tag="rel", array_like=True):
    """A worker no longer holds one connection of ``user_id``."""

    user_id: int


class Publish(msgspec.Struct, tag="pub", array_like=True):
    """One encoded event for the connections of ``user_ids`` (except ``exclude_user``'s)."""

    user_ids: list[int]
    event: str
    payload: bytes
    exclude_user: int | None = None
    droppable: bool = False
    offsets: list[int] | None = None  # each receiver's offset (0: none), parallel to user_ids
    done: tuple[int, int] | None = None  # (worker, ticket): that worker awaits its own copy


class Delivered(msgspec.Struct, tag="done", array_like=True):
    """The stream event this worker published as ``ticket`` was numbered and forwarded; none
    of its receivers is here."""

    ticket: int


class PublishChat(msgspec.Struct, tag="pubchat", array_like=True):
    """Deliver an event to a chat's online members (the worker resolves the members)."""

    chat_id: int
    event: str
    payload: bytes


class Invalidate(msgspec.Struct, tag="inval", array_like=True):
    """Forget the cached member list of a chat (on every worker, of every host)."""

    chat_id: int


class Revoke(msgspec.Struct, tag="revoke", array_like=True):
    """The backend revoked the user at ``at`` (seconds since the epoch, stamped once by the
    host that received the call): refuse the user's tokens issued until then and close the
    user's connections (4001, ``reason``) on every worker of every host. A worker answers a
    ``request`` other than 0 with ``Revoked``."""

    user_id: int
    reason: str
    at: float
    request: int = 0


class Revoked(msgspec.Struct, tag="revoked", array_like=True):
    """A worker's answer to ``Revoke`` numbered ``request``: the connections it closed."""

    request: int
    closed: int


class Revocations(msgspec.Struct, tag="revs", array_like=True):
    """The revocations still in force, as (user id, at), for a worker that has just said
    hello: it refuses those tokens before it admits anyone."""

    records: list[tuple[int, float]]


class Drained(msgspec.Struct, tag="drained", array_like=True):
    """A stopping worker finished its backend calls in flight."""


class CloseNow(msgspec.Struct, tag="close", array_like=True):
    """Every worker has drained (or the time is up): close the connections."""


class MetricsRequest(msgspec.Struct, tag="mreq", array_like=True):
    """The supervisor is scraped: every worker answers with a ``MetricsReply``."""

    request: int


class MetricsReply(msgspec.Struct, tag="mrep", array_like=True):
    """A worker's metric families, as :func:`gogate.metrics.encode_families` made them."""

    request: int
    families: bytes


Message = (Hello | Acquire | Granted | Replay | Replayed | StreamReset | Release | Publish
           | Delivered | PublishChat | Invalidate
           | Revoke | Revoked | Revocations | Drained | CloseNow | MetricsRequest | MetricsReply)

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    """One frame: length prefix and message."""
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes | memoryview) -> Message:
    message: Message = _decoder.decode(body)
    return message


class BusProtocol(asyncio.BufferedProtocol):
    """Reads frames from a Unix socket and hands each decoded message to ``on_message``;
    writes frames with :meth:`send`. ``on_lost`` runs once when the socket closes."""

    def __init__(self, on_message: Callable[[BusProtocol, Message], None],
                 on_lost: Callable[[BusProtocol], None]) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray(256 * 1024)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self.transport: asyncio.Transport | None = None
        self.worker: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._filled == len(self._buffer):
            self._view.release()
            self._buffer.extend(bytes(len(self._buffer)))
            self._view = memoryview(self._buffer)
        return self._view[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        start = 0
        view = self._view
        while self._filled - start >= 4:
            (size,) = _LENGTH.unpack_from(view, start)
            if size > MAX_FRAME:
                assert self.transport is not None
                self.transport.close()
                return
            if self._filled - start - 4 < size:
                if size + 4 > len(self._buffer):
                    self._grow(size + 4, start)
                    return
                break
            self._on_message(self, decode(view[start + 4:start + 4 + size]))
            start += 4 + size
        if start:
            remaining = self._filled - start
            self._buffer[:remaining] = self._buffer[start:self._filled]
            self._filled = remaining

    def _grow(self, needed: int, start: int) -> None:
        remaining = self._filled - start
        data = bytes(self._buffer[start:self._filled])
        self._view.release()
        self._buffer = bytearray(max(needed, 2 * len(self._buffer)))
        self._buffer[:remaining] = data
        self._view = memoryview(self._buffer)
        self._filled = remaining

    def send(self, message: Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(message))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost(self)
