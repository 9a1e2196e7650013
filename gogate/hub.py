"""The hub of one worker, and the broker that brings events to the hubs of a deployment.

A broadcast is encoded once by its publisher and handed to the :class:`Broker`, which brings it
to every worker holding one of its receivers (:meth:`Node.deliver`). There the :class:`Hub`
frames it once and writes it to every receiving connection with the fan-out loop, which never
waits: a paused connection queues into its bounded send queue, and one that overflows is closed
as a slow consumer. Frames for one connection within one loop iteration leave in one write (the
:class:`~gogate_fast.Flusher`), still one event per WebSocket frame.

The broker also counts each user's connections across the deployment, so that the limit per
user holds however many workers and hosts there are. :class:`LocalBroker` serves a lone worker in
process; the brokers of several workers (:mod:`gogate.cluster`) implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

from gogate.errors import Close
from gogate.log import hub_log
from gogate.metrics import Metrics
from gogate_fast import Sink, deliver

__all__ = ["Broker", "Deliver", "Hub", "LocalBroker", "Node", "Peer"]

Deliver = Callable[[Collection[int], str, bytes, "int | None", bool], None]
"""``deliver(user_ids, event, payload, exclude_user, droppable)`` on one worker."""


class Node(Protocol):
    """What a broker may ask of the worker it serves."""

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        """Write one encoded event to this worker's connections of ``user_ids``."""

    def held(self, user_id: int) -> int:
        """This worker's connections of the user."""

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        """Deliver an event to the members of a chat (their list is looked up here)."""

    def invalidate(self, chat_id: int) -> None:
        """Forget the cached member list of a chat."""

    def collect(self) -> bytes:
        """This worker's metric families, encoded for the process that serves ``/metrics``."""

    def lost(self) -> None:
        """The deployment is gone: stop this worker."""


class Broker(Protocol):
    """Carries encoded events between the workers of a deployment, and counts each user's
    connections across it."""

    async def start(self, node: Node) -> None:
        """Serve ``node`` (this worker): deliveries and requests for it go there."""

    async def stop(self) -> None: ...

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        """Bring ``payload`` (one encoded event) to every connection of ``user_ids``, except
        those of ``exclude_user``, on every worker. Never waits."""

    async def acquire(self, user_id: int, limit: int) -> bool:
        """Count one more connection of the user unless it already holds ``limit`` (0 = no
        limit) anywhere in the deployment."""

    def release(self, user_id: int) -> None:
        """Count one connection of the user less."""

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every worker's calls in flight are done, so
        that their last broadcasts still find every connection open."""


class LocalBroker:
    """The broker of a lone worker: publishing is delivering, in the publishing call."""

    def __init__(self) -> None:
        self._node: Node | None = None

    async def start(self, node: Node) -> None:
        self._node = node

    async def stop(self) -> None:
        self._node = None

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        node = self._node
        if node is None:
            raise RuntimeError("the broker serves no worker")
        node.deliver(user_ids, event, payload, exclude_user, droppable)

    async def acquire(self, user_id: int, limit: int) -> bool:
        # Nothing here waits, so the connection is in the hub before anyone else asks: the
        # hub's own registry is the count, with no table of its own.
        return not limit or self._node is None or self._node.held(user_id) < limit

    def release(self, user_id: int) -> None:
        return None

    async def drained(self, timeout: float) -> None:
        return None


class Peer(Protocol):
    """What the hub needs of a connection: to close it when it cannot keep up."""

    def close(self, reason: Close) -> None: ...


class Hub:
    """User id → the sinks of that user's connections on this worker.

    A connection enters with a slot of its user taken from the broker, and gives it back when
    it leaves, so that this worker's registry and the deployment's count move together.
    """

    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        self._users: dict[int, list[Sink]] = {}
        self._broker = broker
        self._metrics = metrics
        self.connections = 0

    def __contains__(self, user_id: int) -> bool:
        return user_id in self._users

    @property
    def user_count(self) -> int:
        return len(self._users)

    def held(self, user_id: int) -> int:
        """Connections of the user on this worker."""
        sinks = self._users.get(user_id)
        return 0 if sinks is None else len(sinks)

    async def enter(self, user_id: int, sink: Sink, limit: int) -> bool:
        """Take one of the user's ``limit`` slots (0 = unlimited) in the deployment and register
        the connection's ``sink``; ``False`` when the user holds ``limit`` already. A sink
        closed meanwhile gives its slot back at once and is not registered."""
        if not await self._broker.acquire(user_id, limit):
            return False
        if sink.closed:
            self._broker.release(user_id)
        else:
            self._users.setdefault(user_id, []).append(sink)
            self.connections += 1
        return True

    def leave(self, user_id: int, sink: Sink) -> None:
        """Forget a connection and give its slot back; harmless when it never entered."""
        sinks = self._users.get(user_id)
        if sinks is None or sink not in sinks:
            return
        sinks.remove(sink)
        self.connections -= 1
        if not sinks:
            del self._users[user_id]
        self._broker.release(user_id)

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
