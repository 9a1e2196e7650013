"""Per-user resumable streams: the numbered events addressed to each user, kept for a while so
that a client which reconnects can be sent what it missed.

A user's stream has an epoch (a random string chosen when the stream is created) and the
offset of its latest event; offsets go up by one per event. A kept event is stored once,
however many users received it: a stream holds only a reference to it. The offsets of a
stream's kept events are consecutive, so each follows from the latest offset and its place in
the stream, and nothing else is stored per receiver.

What is kept, and for how long:

- a stream exists while its user holds a connection and for ``ttl`` seconds after the last one
  closes; then it is dropped, and a later stream starts over with a new epoch and offset 1;
- it keeps its latest ``size`` events, and only those younger than ``ttl`` seconds, whether or
  not the user is connected;
- an event for a user without a stream is not kept for that user and gets no offset.

Expiry costs what expires. Events leave in the order they came (one log for the whole store)
and streams leave in the order their last connection closed (one queue), so :meth:`prune`
touches only what it drops. An event every stream has already trimmed by size is skipped in
the log; the log is compacted once such events make up half of it, which costs no more than
the events that were trimmed.

One store serves a host: a lone worker keeps it in process; with several workers the
supervisor, which sees every event routed between them, keeps it for all of them.

:class:`OffsetFrames` builds the WebSocket frames of one stream event for receivers at
different offsets: the event is encoded once, and per receiver only the header and the offset
digits differ.
"""

from __future__ import annotations

import secrets
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Final

__all__ = ["OffsetFrames", "StreamStore", "frame_header", "frame_with_offset"]

_COMPACT_AFTER: Final = 1024  # trimmed events skipped in the log before compaction is considered
_OFFSET_KEY: Final = b',"offset":'
_MAX_DIGITS: Final = 20  # an offset of up to 19 digits, then the closing brace
_NOBODY: Final[array[int]] = array("q")  # receivers of an event not kept yet; never written to


def _new_epoch() -> str:
    return secrets.token_urlsafe(9)


class _Kept:
    """One kept event, shared by every stream that holds it. ``receivers`` lists the users
    whose stream took it (for expiry); ``holders`` counts the streams that still hold it."""

    __slots__ = ("at", "event", "holders", "payload", "receivers")

    def __init__(self, event: str, payload: bytes, at: float) -> None:
        self.event = event
        self.payload = payload
        self.at = at
        self.holders = 0
        self.receivers = _NOBODY


class _Stream:
    __slots__ = ("connections", "epoch", "events", "expires", "last")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.last = 0  # offset of the latest event, 0 before the first
        self.events: deque[_Kept] = deque()  # kept events, oldest first, ending at ``last``
        self.connections = 0
        self.expires = 0.0  # when the stream goes, once it has no connection


class StreamStore:
    """The streams of one host: ``size`` events per user, kept ``ttl`` seconds.

    ``clock`` gives monotonic seconds; ``new_epoch`` makes the epoch of a new stream.
    """

    def __init__(self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic,
                 new_epoch: Callable[[], str] = _new_epoch) -> None:
        if size < 1 or ttl <= 0:
            raise ValueError("a stream keeps at least one event for a positive time")
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._new_epoch = new_epoch
        self._streams: dict[int, _Stream] = {}
        self._log: deque[_Kept] = deque()  # every kept event still held, in arrival order
        self._trimmed = 0  # events in the log that no stream holds any more
        self._closing: deque[tuple[float, int]] = deque()  # (expiry, user id), in closing order

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._streams

    @property
    def kept(self) -> int:
        """Distinct events held by at least one stream."""
        return len(self._log) - self._trimmed

    def _stream(self, user_id: int) -> _Stream:
        stream = self._streams.get(user_id)
        if stream is None:
            stream = self._streams[user_id] = _Stream(self._new_epoch())
            stream.expires = self._clock() + self.ttl
            self._closing.append((stream.expires, user_id))
        return stream

    def position(self, user_id: int) -> tuple[str, int]:
        """The stream's epoch and latest offset, creating the stream when the user has none
        (it then lives ``ttl`` seconds unless a connection opens)."""
        stream = self._stream(user_id)
        return stream.epoch, stream.last

    def open(self, user_id: int) -> tuple[str, int]:
        """A connection of the user opened: the stream lives at least as long. Returns its
        position."""
        stream = self._stream(user_id)
        stream.connections += 1
        return stream.epoch, stream.last

    def close(self, user_id: int) -> None:
        """A connection of the user closed; after the last one the stream lives ``ttl`` more
        seconds."""
        stream = self._streams.get(user_id)
        if stream is None or stream.connections == 0:
            return
        stream.connections -= 1
        if stream.connections == 0:
            stream.expires = self._clock() + self.ttl
            self._closing.append((stream.expires, user_id))

    def connections(self, user_id: int) -> int:
        stream = self._streams.get(user_id)
        return 0 if stream is None else stream.connections

    def append(self, user_ids: Iterable[int], event: str, payload: bytes) -> dict[int, int]:
        """Keep one encoded event for every receiver that has a stream, and give it the next
        offset of each. Returns user id → offset for those receivers only."""
        now = self._clock()
        if self._log and self._log[0].at <= now - self.ttl:
            self._expire_events(now)
        find = self._streams.get
        offsets: dict[int, int] = {}
        kept = _Kept(event, payload, now)
        size = self.size
        unique = isinstance(user_ids, frozenset | set)
        for user_id in user_ids:
            stream = find(user_id)
            if stream is None or (not unique and user_id in offsets):
                continue
            events = stream.events
            if len(events) == size:
                self._release(events.popleft())
            events.append(kept)
            stream.last = last = stream.last + 1
            offsets[user_id] = last
        if offsets:
            kept.receivers = array("q", list(offsets))
            kept.holders = len(offsets)
            self._log.append(kept)
        return offsets

    def since(self, user_id: int, epoch: str, offset: int) -> list[tuple[int, bytes]] | None:
        """Every kept event after ``offset``, oldest first, as (offset, payload); ``None`` when
        they cannot all be given: no stream, another epoch, an offset above the latest, or
        events after it already dropped."""
        stream = self._streams.get(user_id)
        if stream is None or stream.epoch != epoch or not 0 <= offset <= stream.last:
            return None
        events = stream.events
        horizon = self._clock() - self.ttl
        while events and events[0].at <= horizon:
            self._release(events.popleft())
        missed = stream.last - offset
        if missed > len(events):
            return None
        first = offset + 1
        return [(first + index, kept.payload)
                for index, kept in enumerate(islice(events, len(events) - missed, None))]

    def prune(self) -> None:
        """Drop the events older than ``ttl`` and the streams whose time is up."""
        now = self._clock()
        self._expire_events(now)
        closing = self._closing
        streams = self._streams
        while closing and closing[0][0] <= now:
            _, user_id = closing.popleft()
            stream = streams.get(user_id)
            if stream is not None and stream.connections == 0 and stream.expires <= now:
                del streams[user_id]
                for kept in stream.events:
                    self._release(kept)

    def _release(self, kept: _Kept) -> None:
        kept.holders -= 1
        if kept.holders == 0:
            self._trimmed += 1
            if self._trimmed > _COMPACT_AFTER and 2 * self._trimmed > len(self._log):
                self._log = deque(held for held in self._log if held.holders)
                self._trimmed = 0

    def _expire_events(self, now: float) -> None:
        log = self._log
        streams = self._streams
        horizon = now - self.ttl
        while log and log[0].at <= horizon:
            kept = log.popleft()
            if kept.holders == 0:
                self._trimmed -= 1
                continue
            for user_id in kept.receivers:
                stream = streams.get(user_id)
                # A stream holds its events in arrival order, so an expired event it still
                # holds is its oldest.
                if stream is not None and stream.events and stream.events[0] is kept:
                    stream.events.popleft()
                    kept.holders -= 1
            # Every holder was visited: the event is gone from the store.
            kept.holders = 0


def frame_header(size: int) -> bytes:
    """The header of a final, unmasked text frame of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big")
    return bytes((0x81, 127)) + size.to_bytes(8, "big")


def _offset_body(payload: bytes) -> bytes:
    if len(payload) < 3 or payload[:1] != b"{" or payload[-1:] != b"}":
        raise ValueError("a stream event is a non-empty JSON object")
    return payload[:-1] + _OFFSET_KEY


class OffsetFrames:
    """The frames of one encoded stream event, each carrying a receiver's ``offset``.

    ``payload`` is the event encoded once, ``{"event":...,"data":...}``. The shared part, the
    payload without its closing brace followed by ``,"offset":``, is built once; a receiver's
    frame is a header (its length depends on the number of digits), that part, the digits and
    the closing brace. Headers and shared part are joined once per digit count.
    """

    __slots__ = ("_body", "_heads")

    def __init__(self, payload: bytes) -> None:
        self._body = _offset_body(payload)
        self._heads: list[bytes | None] = [None] * (_MAX_DIGITS + 1)

    def frame(self, offset: int) -> bytes:
        tail = b"%d}" % offset
        if offset < 0 or len(tail) > _MAX_DIGITS:
            raise ValueError("an offset is a non-negative integer of at most 19 digits")
        head = self._heads[len(tail)]
        if head is None:
            head = frame_header(len(self._body) + len(tail)) + self._body
            self._heads[len(tail)] = head
        return head + tail


def frame_with_offset(payload: bytes, offset: int) -> bytes:
    """One frame of ``payload`` carrying ``offset`` (a replayed event, framed for one
    receiver)."""
    body = _offset_body(payload)
    if offset < 0:
        raise ValueError("an offset is a non-negative integer")
    tail = b"%d}" % offset
    return frame_header(len(body) + len(tail)) + body + tail
