"""The pure-Python hot path: server frames, coalescing per-connection sinks, and the fan-out
loop.

It runs wherever the compiled module is absent or ``GOGATE_NO_EXTENSIONS=1`` is set, and is
the compiled module's twin, statement for statement: the same ring, the same shedding, the same
flush rules. The tests run against both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

__all__ = ["Flusher", "Sink", "build_frame", "deliver", "stats"]

_live = {"sinks": 0, "rings": 0, "queued": 0}


def stats() -> dict[str, int]:
    """Live sinks, allocated send rings and the frames waiting in them: a leak shows as counts
    that do not return to 0 once the connections are gone."""
    return dict(_live)


def build_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame carrying ``payload``: valid for every receiver."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


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
    """

    __slots__ = ("__weakref__", "_closed", "_count", "_dirty", "_droppable", "_flusher",
                 "_frames", "_head", "_paused", "_pending", "_write", "capacity", "max_bytes",
                 "owner", "queued_bytes")

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

    def pause(self) -> None:
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    def resume(self) -> None:
        """The transport drained: write what waits, in order, in one write."""
        self._paused = False
        self._flush_pending()
        if self._count == 0:
            return
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

    def close(self, flush: bool = True) -> None:
        """Stop writing and release the queue; first write what was already collected unless
        ``flush`` is false (the socket is gone)."""
        if self._closed:
            return
        if flush:
            self._flush_pending()
        self._pending = None
        self._closed = True
        self._free_ring()
        self._write = None
        self.owner = None


class _Delivery:
    """One broadcast under way: its frame, built on the first receiver, and its tally."""

    __slots__ = ("droppable", "frame", "overflowed", "payload", "reached")

    def __init__(self, payload: bytes, droppable: bool) -> None:
        self.payload = payload
        self.frame: bytes | None = None
        self.droppable = droppable
        self.reached = 0
        self.overflowed: list[Sink] | None = None

    def send_all(self, held: list[Sink]) -> None:
        n = len(held)
        if n and self.frame is None:
            self.frame = build_frame(self.payload)
        for sink in held:
            if not sink.send(self.frame, self.droppable):  # type: ignore[arg-type]
                if self.overflowed is None:
                    self.overflowed = []
                self.overflowed.append(sink)
        self.reached += n


def deliver(users: dict[int, list[Sink]], user_ids: Collection[int], exclude_user: Any,
            payload: bytes, droppable: bool = False) -> tuple[int, list[Sink] | None]:
    """Frame ``payload`` once and send it to every sink of ``user_ids`` found in ``users``
    (user id → list of sinks), skipping ``exclude_user``. Returns the number of sinks reached
    and the list of those that overflowed (or None)."""
    excluding = exclude_user is not None
    delivery = _Delivery(payload, droppable)
    if len(user_ids) <= len(users):  # walk the smaller side
        for user_id in user_ids:
            found = users.get(user_id)
            if found is not None and not (excluding and user_id == exclude_user):
                delivery.send_all(found)
    else:
        for user_id, held in users.items():
            if not (excluding and user_id == exclude_user) and user_id in user_ids:
                delivery.send_all(held)
    return delivery.reached, delivery.overflowed
