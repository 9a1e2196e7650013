"""The hub of one worker: which connections each user holds here, and delivery to them.

A broadcast is encoded once by its publisher, handed to the broker, and on each worker framed
once and written to every receiving connection by the fan-out loop, which never waits: a paused
connection queues into its bounded send queue, and one that overflows is closed as a slow
consumer. Frames for one connection within one loop iteration leave in one write (the
:class:`~gogate_fast.Flusher`), still one event per WebSocket frame.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from gogate.broker import Broker
from gogate.errors import Close
from gogate.log import hub_log
from gogate.metrics import Metrics
from gogate_fast import Flusher, Sink, deliver

__all__ = ["Hub", "Peer"]


class Peer(Protocol):
    """What the hub needs of a connection."""

    @property
    def user_id(self) -> int | None: ...

    @property
    def sink(self) -> Sink: ...

    def close(self, reason: Close) -> None: ...


class Hub:
    """User id → the sinks of that user's connections on this worker."""

    def __init__(self, broker: Broker, metrics: Metrics, flusher: Flusher) -> None:
        self._users: dict[int, list[Sink]] = {}
        self.flusher = flusher
        self._broker = broker
        self._metrics = metrics
        self.connections = 0
        broker.attach(self.deliver, self.connection_count)

    def __contains__(self, user_id: int) -> bool:
        return user_id in self._users

    @property
    def user_count(self) -> int:
        return len(self._users)

    def connection_count(self, user_id: int) -> int:
        """Connections of the user on this worker."""
        sinks = self._users.get(user_id)
        return 0 if sinks is None else len(sinks)

    async def acquire(self, user_id: int, limit: int) -> bool:
        """Take a connection slot of the user in the deployment (``limit`` 0 = unlimited)."""
        return await self._broker.acquire(user_id, limit)

    def release(self, user_id: int) -> None:
        self._broker.release(user_id)

    def add(self, peer: Peer) -> None:
        """Register an authenticated connection whose slot was acquired."""
        assert peer.user_id is not None
        self._users.setdefault(peer.user_id, []).append(peer.sink)
        self.connections += 1

    def remove(self, peer: Peer) -> None:
        """Forget a connection; harmless when it was never added."""
        if peer.user_id is None:
            return
        sinks = self._users.get(peer.user_id)
        if sinks is None or peer.sink not in sinks:
            return
        sinks.remove(peer.sink)
        self.connections -= 1
        if not sinks:
            del self._users[peer.user_id]
        self._broker.release(peer.user_id)

    def publish(self, user_ids: Collection[int], event: str, payload: bytes, *,
                exclude_user: int | None = None, droppable: bool = False) -> None:
        """Send one encoded event to every connection of ``user_ids`` in the deployment."""
        self._broker.publish(user_ids, event, payload, exclude_user, droppable)

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        """Frame once and write to this worker's connections of ``user_ids``."""
        reached, overflowed = deliver(self._users, user_ids, exclude_user, payload, droppable)
        if reached:
            self._metrics.event_out(event, reached)
        for sink in overflowed or ():
            hub_log.info("slow consumer", extra={"event": event})
            owner: Peer = sink.owner  # type: ignore[assignment]
            owner.close(Close.SLOW_CONSUMER)
