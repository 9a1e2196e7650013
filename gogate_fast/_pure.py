"""The pure-Python hot path: server frames, coalescing per-connection sinks, and the fan-out
loop.

It is the reference for the compiled module and runs wherever the compiled one is absent or
``GOGATE_NO_EXTENSIONS=1`` is set. Both implement exactly this interface.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

__all__ = ["Flusher", "Sink", "build_frame", "deliver", "fanout", "stats"]

_live = {"sinks": 0, "rings": 0}


def stats() -> dict[str, int]:
    """Live sinks and allocated send rings: a leak shows as counts that never return to 0."""
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
    """Writes each sink's frames of one loop iteration in one write, once the iteration's
    callbacks have run. ``schedule`` is the loop's ``call_soon``."""

    __slots__ = ("_dirty", "_schedule", "_scheduled")

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self._schedule = schedule
        self._dirty: list[Sink] = []
        self._scheduled = False

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def _mark(self, sink: Sink) -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        """Write every pending frame now."""
        dirty = self._dirty
        self._dirty = []
        self._scheduled = False
        for sink in dirty:
            sink._flush_pending()


class Sink:
    """The outbound side of one connection.

    While the transport takes data, frames are written (coalesced per loop iteration when a
    :class:`Flusher` is given). While it is paused, they wait in order in a queue bounded by
    ``capacity`` frames and ``max_bytes`` bytes; a droppable frame (typing) is shed first, and
    when nothing can be shed :meth:`send` returns ``False`` for the owner to close the
    connection as a slow consumer. Nothing else is ever dropped from an open connection.
    """

    __slots__ = ("__weakref__", "_closed", "_dirty", "_flusher", "_paused", "_pending",
                 "_queue", "_write", "capacity", "max_bytes", "owner", "queued_bytes")

    def __init__(self, write: Callable[[bytes], object], capacity: int, max_bytes: int,
                 owner: object = None, flusher: Flusher | None = None) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be positive")
        self._write: Callable[[bytes], object] | None = write
        self._flusher = flusher
        self._pending: list[bytes] | None = None
        self._queue: deque[tuple[bytes, bool]] | None = None
        self._paused = False
        self._closed = False
        self._dirty = False
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.owner = owner
        _live["sinks"] += 1

    def __del__(self) -> None:
        try:
            queue = self._queue
        except AttributeError:  # __init__ refused its arguments: nothing was counted
            return
        _live["sinks"] -= 1
        if queue is not None:
            _live["rings"] -= 1

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return 0 if self._queue is None else len(self._queue)

    def send(self, frame: bytes, droppable: bool = False) -> bool:
        """Write, coalesce or queue ``frame``; ``False`` means the queue overflowed."""
        if self._closed:
            return True
        if not self._paused:
            if self._flusher is None:
                self._write(frame)  # type: ignore[misc]
            elif self._pending is None:
                self._pending = [frame]
                if not self._dirty:
                    self._dirty = True
                    self._flusher._mark(self)
            else:
                self._pending.append(frame)
            return True
        size = len(frame)
        if self._queue is None:
            self._queue = deque()
            _live["rings"] += 1
        if len(self._queue) >= self.capacity or self.queued_bytes + size > self.max_bytes:
            if droppable:
                return True
            if not self._shed(size):
                return False
        self._queue.append((frame, droppable))
        self.queued_bytes += size
        return True

    def _shed(self, size: int) -> bool:
        """Drop queued droppable frames, oldest first, until one more frame of ``size`` bytes
        fits; ``False`` (and nothing dropped) when it cannot fit."""
        assert self._queue is not None
        count = len(self._queue)
        queued_bytes = self.queued_bytes
        kept: deque[tuple[bytes, bool]] = deque()
        for item in self._queue:
            if item[1] and (count >= self.capacity or queued_bytes + size > self.max_bytes):
                count -= 1
                queued_bytes -= len(item[0])
            else:
                kept.append(item)
        if count >= self.capacity or queued_bytes + size > self.max_bytes:
            return False
        self._queue = kept
        self.queued_bytes = queued_bytes
        return True

    def _flush_pending(self) -> None:
        pending = self._pending
        self._dirty = False
        if pending is None:
            return
        self._pending = None
        if self._write is not None:
            self._write(pending[0] if len(pending) == 1 else b"".join(pending))

    def flush(self) -> None:
        """Write this sink's coalesced frames now (before a close frame, say)."""
        self._flush_pending()

    def pause(self) -> None:
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    def resume(self) -> None:
        """The transport drained: write what waits, in order, in one write."""
        self._paused = False
        self._flush_pending()
        queue = self._queue
        if not queue or self._closed or self._write is None:
            return
        frames = [frame for frame, _ in queue]
        self._release_queue()
        self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _release_queue(self) -> None:
        if self._queue is not None:
            self._queue = None
            self.queued_bytes = 0
            _live["rings"] -= 1

    def close(self, flush: bool = True) -> None:
        """Stop writing and release the queue; first write what was already coalesced unless
        ``flush`` is false (the socket is gone)."""
        if self._closed:
            return
        if flush:
            self._flush_pending()
        self._pending = None
        self._closed = True
        self._release_queue()
        self._write = None
        self.owner = None


def fanout(frame: bytes, sinks: Iterable[Sink], droppable: bool = False) -> list[Sink]:
    """Send one frame to many sinks without waiting on any; return those that overflowed."""
    overflowed: list[Sink] = []
    for sink in sinks:
        if not sink.send(frame, droppable):
            overflowed.append(sink)
    return overflowed


def deliver(users: dict[int, list[Sink]], user_ids: Collection[int], exclude_user: Any,
            payload: bytes, droppable: bool = False) -> tuple[int, list[Sink] | None]:
    """Frame ``payload`` once and send it to every sink of ``user_ids`` found in ``users``
    (user id → list of sinks), skipping ``exclude_user``. Returns the number of sinks reached
    and the list of those that overflowed (or None)."""
    reached = 0
    frame: bytes | None = None
    overflowed: list[Sink] | None = None
    if len(user_ids) <= len(users):
        pairs: Iterable[tuple[int, list[Sink] | None]] = (
            (user_id, users.get(user_id)) for user_id in user_ids)
    else:
        pairs = ((user_id, held) for user_id, held in users.items() if user_id in user_ids)
    for user_id, held in pairs:
        if not held or user_id == exclude_user:
            continue
        if frame is None:
            frame = build_frame(payload)
        for sink in held:
            if not sink.send(frame, droppable):
                if overflowed is None:
                    overflowed = []
                overflowed.append(sink)
        reached += len(held)
    return reached, overflowed
