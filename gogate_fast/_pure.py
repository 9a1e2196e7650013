"""The pure-Python hot path: server frames, per-connection send queues, and the fan-out loop.

It is the reference for the compiled module and runs wherever the compiled one is absent or
``GOGATE_NO_EXTENSIONS=1`` is set. Both implement exactly this interface.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["Sink", "build_frame", "fanout"]


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


class Sink:
    """The outbound side of one connection: writes straight through while the transport takes
    data, and queues in order while it is paused.

    The queue is bounded by ``capacity`` frames and ``max_bytes`` bytes. When it is full, a
    droppable frame (typing) is shed first: a droppable newcomer is dropped, or the oldest queued
    droppable frame makes room. When nothing can be shed, :meth:`send` returns ``False`` and the
    owner closes the connection as a slow consumer; nothing else is ever dropped.
    """

    __slots__ = ("_closed", "_paused", "_queue", "_queued_bytes", "_write", "capacity",
                 "max_bytes", "owner")

    def __init__(self, write: Callable[[bytes], object], capacity: int, max_bytes: int,
                 owner: object = None) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be positive")
        self._write = write
        self._queue: deque[tuple[bytes, bool]] = deque()
        self._queued_bytes = 0
        self._paused = False
        self._closed = False
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.owner = owner

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, frame: bytes, droppable: bool = False) -> bool:
        """Write or queue ``frame``; ``False`` means the queue overflowed."""
        if self._closed:
            return True
        if not self._paused:
            self._write(frame)
            return True
        queue = self._queue
        size = len(frame)
        if len(queue) >= self.capacity or self._queued_bytes + size > self.max_bytes:
            if droppable:
                return True
            if not self._shed(size):
                return False
            queue = self._queue
        queue.append((frame, droppable))
        self._queued_bytes += size
        return True

    def _shed(self, size: int) -> bool:
        """Drop queued droppable frames, oldest first, until one more frame of ``size`` bytes
        fits; ``False`` (and nothing dropped) when it cannot fit."""
        count = len(self._queue)
        queued_bytes = self._queued_bytes
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
        self._queued_bytes = queued_bytes
        return True

    def pause(self) -> None:
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    def resume(self) -> None:
        """The transport drained: write the queue in order until it pauses again."""
        self._paused = False
        queue = self._queue
        while queue and not self._paused and not self._closed:
            frame, _ = queue.popleft()
            self._queued_bytes -= len(frame)
            self._write(frame)

    def close(self) -> None:
        """Stop writing and release the queue."""
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0


def fanout(frame: bytes, sinks: Iterable[Sink], droppable: bool = False) -> list[Sink]:
    """Send one frame to many sinks without waiting on any; return those that overflowed."""
    overflowed: list[Sink] = []
    for sink in sinks:
        if not sink.send(frame, droppable):
            overflowed.append(sink)
    return overflowed
