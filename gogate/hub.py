"""The hub of one worker, and the broker that brings events to the hubs of a deployment.

A broadcast is encoded once by its publisher and handed to the :class:`Broker`, which brings it
to every worker holding one of its receivers (:meth:`Node.deliver`). There the :class:`Hub`
frames it once and writes it to every receiving connection with the fan-out loop, which never
waits: a paused connection queues into its bounded send queue, and one that overflows is closed
as a slow consumer. Frames for one connection within one loop iteration leave in one write (the
:class:`~gogate_fast.Flusher`), still one event per WebSocket frame.

The broker also counts each user's connections across the deployment, so that the limit per
user holds however many workers and hosts there are, and it numbers the events of each user's
stream (:mod:`gogate.streams`): every broadcast that may not be dropped is a stream event, which
the broker's one authority appends to each receiver's stream before any worker delivers it, so
that every device of a user sees the same offsets, in order. :class:`LocalBroker` serves a lone
worker in process; the brokers of several workers (:mod:`gogate.cluster`) implement the same
protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Final, NamedTuple, Protocol

from gogate.errors import Close
from gogate.events import StreamPosition
from gogate.log import hub_log
from gogate.metrics import Metrics
from gogate.streams import StreamStore
from gogate_fast import Sink, deliver

__all__ = ["Broker", "Deliver", "Grant", "Hub", "LocalBroker", "Node", "Peer", "Replayed"]

_PRUNE_EVERY: Final = 1.0  # seconds between two expiries of kept events and streams

Deliver = Callable[[Collection[int], str, bytes, "int | None", bool, "dict[int, int] | None"],
                   None]
"""``deliver(user_ids, event, payload, exclude_user, droppable, offsets)`` on one worker."""

Replayed = Sequence[tuple[int, bytes]]
"""Kept events of one stream, oldest first: (offset, the event as it was published)."""


class Grant(NamedTuple):
    """A connection slot the broker gave, and the user's stream as it stood once the slot was
    counted. ``epoch`` None: the user's events are not numbered (recovery is off). ``offset``:
    the stream's latest. ``recovered``: None without a ``since``; True when every event after
    it is in ``events``, oldest first; False when it cannot be served."""

    epoch: str | None
    offset: int
    recovered: bool | None
    events: Replayed


class Node(Protocol):
    """What a broker may ask of the worker it serves."""

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool,
                offsets: dict[int, int] | None = None) -> None:
        """Write one encoded event to this worker's connections of ``user_ids``; a user in
        ``offsets`` gets it with that offset of the user's stream."""

    def reset(self, user_id: int, epoch: str, offset: int) -> None:
        """The user's stream was replaced (its kept events may be lost): tell each of this
        worker's connections of the user its new position with ``stream_reset``."""

    def held(self, user_id: int) -> int:
        """This worker's connections of the user."""

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        """Deliver an event to the members of a chat (their list is looked up here)."""

    def invalidate(self, chat_id: int) -> None:
        """Forget the cached member list of a chat."""

    def revoke(self, user_id: int, reason: str, at: float) -> int:
        """The backend revoked the user at ``at`` (seconds since the epoch): refuse the user's
        tokens issued until then, close this worker's connections of the user (4001 with
        ``reason``) and return how many were closed."""

    def learn_revocations(self, records: list[tuple[int, float]]) -> None:
        """Revocations (user id, at) made before this worker started and still in force."""

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
                exclude_user: int | None, droppable: bool) -> Awaitable[None] | None:
        """Bring ``payload`` (one encoded event) to every connection of ``user_ids``, except
        those of ``exclude_user``, on every worker. Never waits. An event that is not
        ``droppable`` is a stream event: with recovery on, it is kept in the stream of every
        receiver that has one, and delivered with that receiver's offset.

        None when this worker has delivered the event already; else an awaitable done once it
        has (or gave up), so that an answer written after awaiting it follows the event on
        every connection of this worker."""

    async def acquire(self, user_id: int, limit: int,
                      since: StreamPosition | None = None) -> Grant | None:
        """Count one more connection of the user unless it already holds ``limit`` (0 = no
        limit) anywhere in the deployment (then None). With recovery on, the user's stream
        lives at least as long as the connection; the grant says where it stands and, when
        ``since`` can be served, carries every event after it."""

    def release(self, user_id: int) -> None:
        """Count one connection of the user less (its stream may now expire)."""

    async def replay(self, user_id: int, epoch: str, offset: int) -> Replayed | None:
        """Every kept event of the user's stream ``epoch`` after ``offset``, oldest first;
        None when they cannot all be given (another epoch, or some already dropped)."""

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every worker's calls in flight are done, so
        that their last broadcasts still find every connection open."""


class LocalBroker:
    """The broker of a lone worker: publishing is numbering and delivering, in the publishing
    call. With ``recovery_ttl`` > 0 it keeps the worker's streams (``recovery_size`` events per
    user, for ``recovery_ttl`` seconds)."""

    def __init__(self, recovery_ttl: float = 0.0, recovery_size: int = 1000) -> None:
        self._node: Node | None = None
        self.streams = StreamStore(recovery_size, recovery_ttl) if recovery_ttl > 0 else None
        self._pruning: asyncio.Task[None] | None = None

    async def start(self, node: Node) -> None:
        self._node = node
        if self.streams is not None:
            self._pruning = asyncio.get_running_loop().create_task(self._prune(self.streams))

    async def stop(self) -> None:
        self._node = None
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning

    @staticmethod
    async def _prune(streams: StreamStore) -> None:
        while True:
            await asyncio.sleep(_PRUNE_EVERY)
            streams.prune()

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        node = self._node
        if node is None:
            raise RuntimeError("the broker serves no worker")
        offsets = None
        if self.streams is not None and not droppable:
            receivers = user_ids if exclude_user is None else [
                user_id for user_id in user_ids if user_id != exclude_user]
            offsets = self.streams.append(receivers, event, payload)
        node.deliver(user_ids, event, payload, exclude_user, droppable, offsets)

    async def acquire(self, user_id: int, limit: int,
                      since: StreamPosition | None = None) -> Grant | None:
        # Nothing here waits, so the connection, which the hub registered before asking, is
        # counted by the hub's own registry, with no table of its own.
        if limit and self._node is not None and self._node.held(user_id) > limit:
            return None
        streams = self.streams
        if streams is None:
            return Grant(None, 0, None if since is None else False, ())
        epoch, offset = streams.open(user_id)
        if since is None:
            return Grant(epoch, offset, None, ())
        events = streams.since(user_id, since.epoch, since.offset)
        return Grant(epoch, offset, events is not None, events or ())

    def release(self, user_id: int) -> None:
        if self.streams is not None:
            self.streams.close(user_id)

    async def replay(self, user_id: int, epoch: str, offset: int) -> Replayed | None:
        return None if self.streams is None else self.streams.since(user_id, epoch, offset)

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

    async def enter(self, user_id: int, sink: Sink, limit: int,
                    since: StreamPosition | None = None) -> Grant | None:
        """Take one of the user's ``limit`` slots (0 = unlimited) in the deployment and register
        the connection's ``sink``; None when the user holds ``limit`` already. A sink closed
        meanwhile gives its slot back at once and is not registered.

        The sink is registered before the broker is asked, catching up: it is written no
        broadcast, but an event numbered while the broker answers raises its ``seen``, so
        that the catch-up that follows (:mod:`gogate.recovery`) misses nothing."""
        sink.catching_up = True
        sink.seen = 0
        self._users.setdefault(user_id, []).append(sink)
        grant = None
        try:
            grant = await self._broker.acquire(user_id, limit, since)
        finally:
            if grant is None or sink.closed:
                self._forget(user_id, sink)
                if grant is not None:
                    self._broker.release(user_id)
        if grant is not None and not sink.closed:
            self.connections += 1
        return grant

    def _forget(self, user_id: int, sink: Sink) -> bool:
        sinks = self._users.get(user_id)
        if sinks is None or sink not in sinks:
            return False
        sinks.remove(sink)
        if not sinks:
            del self._users[user_id]
        return True

    def sinks(self, user_id: int) -> list[Sink]:
        """The sinks of the user's connections on this worker."""
        return list(self._users.get(user_id, ()))

    def leave(self, user_id: int, sink: Sink) -> None:
        """Forget a connection and give its slot back; harmless when it never entered."""
        if self._forget(user_id, sink):
            self.connections -= 1
            self._broker.release(user_id)

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool,
                offsets: dict[int, int] | None = None) -> list[Sink] | None:
        """Frame once (a stream event: once per user, with the user's offset) and write to
        this worker's connections of ``user_ids``. Returns the sinks that found a gap in their
        stream and must now catch up (or None)."""
        reached, overflowed, behind = deliver(self._users, user_ids, exclude_user, payload,
                                              droppable, offsets)
        if reached:
            self._metrics.event_out(event, reached)
        for sink in overflowed or ():
            hub_log.info("slow consumer", extra={"event": event})
            owner: Peer = sink.owner  # type: ignore[assignment]
            owner.close(Close.SLOW_CONSUMER)
        return behind
