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
supervisor, which sees every event routed between them, keeps it for all of them. Appending an
event to its receivers' streams runs once per receiver, so its loop and the streams themselves
live in :mod:`gogate_fast` (compiled, with a pure-Python twin).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Final

from gogate_fast import Kept, StreamLog, append_all

__all__ = ["StreamStore"]

_COMPACT_AFTER: Final = 1024  # trimmed events skipped in the log before compaction is considered


def _new_epoch() -> str:
    return secrets.token_urlsafe(9)


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
        self._streams: dict[int, StreamLog] = {}
        self._log: deque[Kept] = deque()  # every kept event still held, in arrival order
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

    def _stream(self, user_id: int) -> StreamLog:
        stream = self._streams.get(user_id)
        if stream is None:
            stream = self._streams[user_id] = StreamLog(self.size, self._new_epoch())
            stream.expires = self._clock() + self.ttl
            self._closing.append((stream.expires, user_id))
        return stream

    def position(self, user_id: int) -> tuple[str, int]:
        """The stream's epoch and latest offset, creating the stream when the user has none
        (it then lives ``ttl`` seconds unless a connection opens)."""
        stream = self._stream(user_id)
        return str(stream.epoch), stream.last

    def open(self, user_id: int) -> tuple[str, int]:
        """A connection of the user opened: the stream lives at least as long. Returns its
        position."""
        stream = self._stream(user_id)
        stream.connections += 1
        return str(stream.epoch), stream.last

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

    def append(self, user_ids: Collection[int], event: str, payload: bytes) -> dict[int, int]:
        """Keep one encoded event for every receiver that has a stream, and give it the next
        offset of each. Returns user id → offset for those receivers only."""
        now = self._clock()
        if self._log and self._log[0].at <= now - self.ttl:
            self._expire_events(now)
        kept = Kept(event, payload, now)
        offsets, dropped = append_all(self._streams, user_ids, kept,
                                      isinstance(user_ids, frozenset | set))
        if dropped:
            self._dropped(len(dropped))
        if offsets:
            self._log.append(kept)
        return offsets

    def since(self, user_id: int, epoch: str, offset: int) -> list[tuple[int, bytes]] | None:
        """Every kept event after ``offset``, oldest first, as (offset, payload); ``None`` when
        they cannot all be given: no stream, another epoch, an offset above the latest, or
        events after it already dropped."""
        stream = self._streams.get(user_id)
        if stream is None or stream.epoch != epoch or not 0 <= offset <= stream.last:
            return None
        horizon = self._clock() - self.ttl
        while (oldest := stream.oldest) is not None and oldest.at <= horizon:
            self._release(stream.pop_oldest())
        missed = stream.last - offset
        if missed > len(stream):
            return None
        first = offset + 1
        return [(first + index, kept.payload)
                for index, kept in enumerate(stream.newest(missed))]

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
                for kept in stream.newest(len(stream)):
                    self._release(kept)

    def _release(self, kept: Kept) -> None:
        kept.holders -= 1
        if kept.holders == 0:
            self._dropped(1)

    def _dropped(self, count: int) -> None:
        """``count`` events of the log are held by no stream any more."""
        self._trimmed += count
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
                if stream is not None and stream.oldest is kept:
                    stream.pop_oldest()
                    kept.holders -= 1
            # Every holder was visited: the event is gone from the store.
            kept.holders = 0
