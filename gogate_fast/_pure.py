"""The pure-Python hot path: server frames, coalescing per-connection sinks, and the fan-out
loop, which writes each user's stream events with that user's offset and in offset order.

It runs wherever the compiled module is absent or ``GOGATE_NO_EXTENSIONS=1`` is set, and is
the compiled module's twin, statement for statement: the same ring, the same shedding, the same
flush rules. The tests run against both.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Collection
from itertools import islice
from typing import Any

__all__ = ["Flusher", "Kept", "Sink", "StreamLog", "append_all", "build_frame", "deliver",
           "stats"]

_live = {"sinks": 0, "rings": 0, "queued": 0}


def stats() -> dict[str, int]:
    """Live sinks, allocated send rings and the frames waiting in them: a leak shows as counts
    that do not return to 0 once the connections are gone."""
    return dict(_live)


_OFFSET_KEY = b',"offset":'
_NO_OFFSETS: dict[int, int] = {}  # the offsets of a broadcast that has none; never written


def _header(size: int) -> bytes:
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big")
    return bytes((0x81, 127)) + size.to_bytes(8, "big")


def build_frame(payload: bytes, offset: int = -1) -> bytes:
    """A final, unmasked text frame carrying ``payload``: valid for every receiver. With an
    ``offset`` of 0 or more, ``payload`` (one JSON object) gains a last member
    ``"offset":<offset>``: the frame of a stream event for one user."""
    if offset < 0:
        return _header(len(payload)) + payload
    return _offset_frame(_offset_body(payload), offset)


def _offset_body(payload: bytes) -> bytes:
    """The part of a stream event's frames shared by every offset: the event without its
    closing brace, then the offset's key."""
    if len(payload) < 3 or payload[0] != 0x7B or payload[-1] != 0x7D:
        raise ValueError("a stream event is a non-empty JSON object")
    return payload[:-1] + _OFFSET_KEY


def _offset_frame(body: bytes, offset: int) -> bytes:
    if offset > 0x7FFFFFFFFFFFFFFF:
        raise OverflowError("an offset fits in 63 bits")
    tail = b"%d}" % offset
    return _header(len(body) + len(tail)) + body + tail


class Flusher:
    """Writes the frames each sink collected in one write, for every sink at once.

    With ``delay`` 0 the write happens once the loop iteration's callbacks have run
    (``schedule`` is the loop's ``call_soon``). With a positive ``delay`` (seconds) the sinks
    collect frames for that long first (``call_later`` is the loop's ``call_later``): fewer,
    larger writes for a little latency.
    """

    __slots__ = ("_call_later", "_delay", "_dirty", "_flush_cb", "_schedule", "_scheduled")

    def __init__(self, schedule: Callable[[Callable[[], None]], object], delay: float = 0.0,
                 call_later: Callable[[float, Callable[[], None]], object] | None = None
                 ) -> None:
        if delay < 0.0:
            raise ValueError("delay must not be negative")
        if delay > 0.0 and call_later is None:
            raise ValueError("a positive delay needs call_later")
        self._schedule = schedule
        self._call_later = call_later
        self._delay = float(delay)
        self._dirty: list[Sink] = []
        self._scheduled = False
        self._flush_cb = self.flush

    def _mark(self, sink: Sink) -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            if self._delay > 0.0:
                self._call_later(self._delay, self._flush_cb)  # type: ignore[misc]
            else:
                self._schedule(self._flush_cb)

    def flush(self) -> None:
        """Write every collected frame now."""
        dirty = self._dirty
        self._dirty = []
        self._scheduled = False
        for sink in dirty:
            sink._dirty = False
            sink._flush_pending()


class Sink:
    """The outbound side of one connection.

    While the transport takes data, frames are written, or collected for the :class:`Flusher`
    when one is given (and written at once when ``capacity`` of them, at least two, wait).
    While it is paused, they wait in order in a ring bounded by ``capacity`` frames and
    ``max_bytes`` bytes: a droppable frame (typing) that does not fit is dropped, a frame that
    must arrive sheds the oldest queued droppable frames to fit, and when it cannot fit
    :meth:`send` returns ``False`` for the owner to close the connection as a slow consumer.
    Nothing else is ever dropped from an open connection.

    Its place in its user's stream: ``epoch`` (None: no stream) and ``stream_last``, the offset
    of the last stream event written to it (-1: offsets are not checked). While
    ``catching_up`` (a replay under way) the fan-out writes it nothing and only raises
    ``seen`` to the highest offset it offered. ``on_resume``, when set, is called once the
    socket drained and the queued frames are written: a writer paced by the socket (see
    :meth:`write_now`) goes on.
    """

    __slots__ = ("__weakref__", "_closed", "_count", "_dirty", "_droppable", "_flusher",
                 "_frames", "_head", "_paused", "_pending", "_write", "capacity",
                 "catching_up", "epoch", "max_bytes", "on_resume", "owner", "queued_bytes",
                 "seen", "stream_last")

    def __init__(self, write: Callable[[bytes], object], capacity: int, max_bytes: int,
                 owner: object = None, flusher: Flusher | None = None) -> None:
        _live["sinks"] += 1  # first: __del__ runs even when the arguments are refused
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be positive")
        self._write: Callable[[bytes], object] | None = write
        self._flusher = flusher
        self._pending: bytes | list[bytes] | None = None
        self._frames: list[bytes | None] | None = None
        self._droppable = bytearray()
        self._head = 0
        self._count = 0
        self._paused = False
        self._closed = False
        self._dirty = False
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.owner = owner
        self.epoch: object = None
        self.stream_last = -1
        self.seen = 0
        self.catching_up = False
        self.on_resume: Callable[[], object] | None = None

    def __del__(self) -> None:
        if hasattr(self, "_frames"):
            self._free_ring()
        _live["sinks"] -= 1

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, frame: bytes, droppable: bool = False) -> bool:
        """Write, collect or queue ``frame``; ``False`` means the queue overflowed."""
        if self._closed:
            return True
        if not self._paused:
            if self._flusher is None:
                self._write(frame)  # type: ignore[misc]
            else:
                self._collect(frame)
            return True
        return self._enqueue(frame, droppable)

    def _collect(self, frame: bytes) -> None:
        if self._pending is None:
            self._pending = frame
            if not self._dirty:
                self._dirty = True
                self._flusher._mark(self)  # type: ignore[union-attr]
        else:
            self._collect_more(frame)

    def _collect_more(self, frame: bytes) -> None:
        pending: bytes | list[bytes] = self._pending  # type: ignore[assignment]
        if isinstance(pending, bytes):
            pending = self._pending = [pending, frame]
        else:
            pending.append(frame)
        if len(pending) >= self.capacity:
            self._flush_pending()

    def _enqueue(self, frame: bytes, droppable: bool) -> bool:
        size = len(frame)
        if self._count >= self.capacity or self.queued_bytes + size > self.max_bytes:
            if droppable:
                return True
            if not self._shed(size):
                return False
        if self._frames is None:
            self._alloc_ring()
        slot = (self._head + self._count) % self.capacity
        self._frames[slot] = frame  # type: ignore[index]
        self._droppable[slot] = droppable
        self._count += 1
        self.queued_bytes += size
        _live["queued"] += 1
        return True

    def _shed(self, size: int) -> bool:
        """Drop the oldest queued droppable frames until a frame of ``size`` bytes fits;
        ``False`` (and nothing dropped) when it cannot fit."""
        frames: list[bytes | None] = self._frames  # type: ignore[assignment]
        count = self._count
        queued = self.queued_bytes
        reach = 0
        kept = 0
        # How far from the oldest the droppable frames must go for the new one to fit.
        while count >= self.capacity or queued + size > self.max_bytes:
            if reach == self._count:
                return False
            slot = (self._head + reach) % self.capacity
            if self._droppable[slot]:
                count -= 1
                queued -= len(frames[slot])  # type: ignore[arg-type]
            reach += 1
        # Drop those, keeping every other frame in order.
        for i in range(self._count):
            slot = (self._head + i) % self.capacity
            frame = frames[slot]
            frames[slot] = None
            if i < reach and self._droppable[slot]:
                continue
            at = (self._head + kept) % self.capacity
            frames[at] = frame
            self._droppable[at] = self._droppable[slot]
            kept += 1
        _live["queued"] -= self._count - kept
        self._count = kept
        self.queued_bytes = queued
        return True

    def _alloc_ring(self) -> None:
        self._frames = [None] * self.capacity
        self._droppable = bytearray(self.capacity)
        _live["rings"] += 1

    def _free_ring(self) -> None:
        if self._frames is None:
            return
        self._frames = None
        self._droppable = bytearray()
        _live["queued"] -= self._count
        self._head = 0
        self._count = 0
        self.queued_bytes = 0
        _live["rings"] -= 1

    def _flush_pending(self) -> None:
        # A closed sink holds no pending frames: close() takes them.
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if isinstance(pending, bytes):
            self._write(pending)  # type: ignore[misc]
        else:
            self._write(b"".join(pending))  # type: ignore[misc]

    def flush(self) -> None:
        """Write this sink's collected frames now (before a close frame, say)."""
        self._flush_pending()

    def write_now(self, data: bytes) -> None:
        """Write ``data`` (whole frames) at once, after the frames collected so far and past
        the send queue, which it never counts toward: for a writer paced by the socket, which
        writes only while the sink is not paused (see ``on_resume``)."""
        if self._closed:
            return
        self._flush_pending()
        self._write(data)  # type: ignore[misc]

    def pause(self) -> None:
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    def resume(self) -> None:
        """The transport drained: write what waits, in order, in one write; then, while the
        transport still takes data, let ``on_resume`` go on."""
        self._paused = False
        self._flush_pending()
        if self._count:
            ring = self._frames
            assert ring is not None
            frames: list[bytes] = []
            for i in range(self._count):
                frames.append(ring[(self._head + i) % self.capacity])  # type: ignore[arg-type]
            self._free_ring()
            if len(frames) == 1:
                self._write(frames[0])  # type: ignore[misc]
            else:
                self._write(b"".join(frames))  # type: ignore[misc]
        if self.on_resume is not None and not self._paused and not self._closed:
            self.on_resume()

    def close(self, flush: bool = True) -> None:
        """Stop writing and release the queue; first write what was already collected unless
        ``flush`` is false (the socket is gone). A writer waiting on ``on_resume`` is called
        once more, and finds the sink closed."""
        if self._closed:
            return
        if flush:
            self._flush_pending()
        self._pending = None
        self._closed = True
        self._free_ring()
        self._write = None
        self.owner = None
        waiting = self.on_resume
        self.on_resume = None
        if waiting is not None:  # a writer paced by the socket learns that it is gone
            waiting()


class _Delivery:
    """One broadcast under way: its frames, built on the first receiver that needs them, and
    its tally. The plain frame is built once; a stream event's frame once per user, from one
    shared part and the user's offset."""

    __slots__ = ("behind", "body", "droppable", "frame", "overflowed", "payload", "reached")

    def __init__(self, payload: bytes, droppable: bool) -> None:
        self.payload = payload
        self.frame: bytes | None = None
        self.body: bytes | None = None
        self.droppable = droppable
        self.reached = 0
        self.overflowed: list[Sink] | None = None
        self.behind: list[Sink] | None = None

    def send_all(self, held: list[Sink], offset: int) -> None:
        """Send to one user's sinks; ``offset`` is the user's offset of the event, 0 = none."""
        frame: bytes | None = None
        for sink in held:
            if sink.catching_up:
                if offset > sink.seen:
                    sink.seen = offset
                continue
            if offset:
                last = sink.stream_last
                if last >= 0:
                    if offset <= last:  # written already
                        continue
                    if offset != last + 1:  # a gap: the sink catches up from its last
                        sink.catching_up = True
                        sink.seen = offset
                        if self.behind is None:
                            self.behind = []
                        self.behind.append(sink)
                        continue
                    sink.stream_last = offset
                if frame is None:
                    if self.body is None:
                        self.body = _offset_body(self.payload)
                    frame = _offset_frame(self.body, offset)
            elif frame is None:
                if self.frame is None:
                    self.frame = build_frame(self.payload)
                frame = self.frame
            if not sink.send(frame, self.droppable):
                if self.overflowed is None:
                    self.overflowed = []
                self.overflowed.append(sink)
            self.reached += 1


def deliver(users: dict[int, list[Sink]], user_ids: Collection[int], exclude_user: Any,
            payload: bytes, droppable: bool = False, offsets: dict[int, int] | None = None
            ) -> tuple[int, list[Sink] | None, list[Sink] | None]:
    """Send ``payload`` to every sink of ``user_ids`` found in ``users`` (user id → list of
    sinks), skipping ``exclude_user``. A user found in ``offsets`` (user id → that user's
    offset of this stream event) gets it framed with the offset, once for all the user's sinks;
    every other user gets the one plain frame. A sink is written each offset once, in order: a
    repeated offset is skipped, and a sink that finds a gap before an offset is left out and
    listed in ``behind`` (it now catches up). Returns the number of sinks written, those that
    overflowed (or None), and those behind (or None)."""
    excluding = exclude_user is not None
    delivery = _Delivery(payload, droppable)
    numbered = _NO_OFFSETS if offsets is None else offsets
    if len(user_ids) <= len(users):  # walk the smaller side
        for user_id in user_ids:
            found = users.get(user_id)
            if found is not None and not (excluding and user_id == exclude_user):
                delivery.send_all(found, numbered.get(user_id, 0))
    else:
        for user_id, held in users.items():
            if not (excluding and user_id == exclude_user) and user_id in user_ids:
                delivery.send_all(held, numbered.get(user_id, 0))
    return delivery.reached, delivery.overflowed, delivery.behind


# --- per-user streams: the hot part of gogate.streams ----------------------------------------


class Kept:
    """One kept stream event, shared by every stream that holds it: its name, its encoding,
    when it came, how many streams still hold it (``holders``) and the users whose streams took
    it (``receivers``, for expiry)."""

    __slots__ = ("at", "event", "holders", "payload", "receivers")

    def __init__(self, event: str, payload: bytes, at: float) -> None:
        self.event = event
        self.payload = payload
        self.at = at
        self.holders = 0
        self.receivers: Any = None


class StreamLog:
    """The kept events of one user's stream, oldest first, the newest at offset ``last``;
    at most ``size`` of them. ``epoch``, ``connections`` and ``expires`` are the store's."""

    __slots__ = ("_events", "connections", "epoch", "expires", "last", "size")

    def __init__(self, size: int, epoch: object) -> None:
        if size < 1:
            raise ValueError("a stream keeps at least one event")
        self._events: deque[Kept] = deque()
        self.size = size
        self.epoch = epoch
        self.last = 0
        self.connections = 0
        self.expires = 0.0

    def __len__(self) -> int:
        return len(self._events)

    def push(self, kept: Kept) -> Kept | None:
        """Keep ``kept`` as the newest event (at offset ``last`` + 1, which ``last`` becomes);
        returns the oldest one when it had to go to make room, else None."""
        events = self._events
        gone = events.popleft() if len(events) == self.size else None
        events.append(kept)
        self.last += 1
        return gone

    @property
    def oldest(self) -> Kept | None:
        return self._events[0] if self._events else None

    def pop_oldest(self) -> Kept:
        return self._events.popleft()

    def newest(self, count: int) -> list[Kept]:
        """The newest ``count`` events (at most all), oldest first."""
        events = self._events
        count = min(max(count, 0), len(events))
        return list(islice(events, len(events) - count, None))


def append_all(streams: dict[int, StreamLog], user_ids: Collection[int], kept: Kept,
               unique: bool) -> tuple[dict[int, int], list[Kept] | None]:
    """Push ``kept`` onto the stream of every user of ``user_ids`` found in ``streams`` (each
    user once: ``unique`` says that ``user_ids`` repeats none), and name them in its
    ``receivers``. Returns user id → the offset it got, and the events that no stream holds any
    more (or None)."""
    offsets: dict[int, int] = {}
    dropped: list[Kept] | None = None
    find = streams.get
    for user_id in user_ids:
        stream = find(user_id)
        if stream is None or (not unique and user_id in offsets):
            continue
        gone = stream.push(kept)
        offsets[user_id] = stream.last
        if gone is not None:
            gone.holders -= 1
            if gone.holders == 0:
                if dropped is None:
                    dropped = []
                dropped.append(gone)
    kept.receivers = array("q", list(offsets))
    kept.holders = len(offsets)
    return offsets, dropped
