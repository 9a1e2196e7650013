"""A worker's link to its supervisor: :class:`BusBroker`, the broker of a worker among several on
one host, and the entry point of the worker process (``python -m gogate.cluster.link``).

The broker delivers an event to this worker's connections at once and hands it to the
supervisor over the bus (:mod:`gogate.cluster.bus`), which forwards it only to the other
workers holding one of its receivers, and to the other hosts. A stream event (with recovery
on) is not delivered here first: the supervisor numbers it for each receiver and forwards it,
with the offsets, to every worker holding a receiver, this one included, so that every device
of a user sees the same offsets in the same order. The supervisor also counts each user's
connections, so the per-user limit, the stream's position and its catch-ups are asked of it.
Its requests for this worker (a chat's publish, an invalidation, a replaced stream, the
metrics) go to the :class:`~gogate.hub.Node`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Awaitable, Collection
from typing import Final

import uvloop

from gogate.cluster import bus
from gogate.config import worker_from_environment
from gogate.errors import ConfigError
from gogate.events import StreamPosition
from gogate.hub import Grant, Node, Replayed
from gogate.log import configure, hub_log
from gogate.server import run

__all__ = ["BusBroker", "main"]

_ACQUIRE_TIMEOUT: Final = 10.0  # seconds; the supervisor answers at once unless Redis is slow
_WELCOME_TIMEOUT: Final = 5.0  # seconds to wait for the revocations in force before listening


class BusBroker:
    """The broker of worker ``index``, over the supervisor's bus at ``path``; ``recovery``:
    the supervisor numbers stream events."""

    def __init__(self, path: str, index: int, recovery: bool = False) -> None:
        self._path = path
        self.index = index
        self._recovery = recovery
        self._node: Node | None = None
        self._bus: bus.BusProtocol | None = None
        self._requests = itertools.count(1)
        self._tickets = itertools.count(1)
        # stream events published here whose numbered copy has not come back: ticket →
        # (deadline, future), oldest first
        self._sent: dict[int, tuple[float, asyncio.Future[None]]] = {}
        self._waiting: dict[int, asyncio.Future[bus.Granted | bus.Replayed | None]] = {}
        self._stopping = False
        self._close_now: asyncio.Future[None] | None = None
        self._welcome: asyncio.Future[None] | None = None

    async def start(self, node: Node) -> None:
        """Connect to the supervisor and learn the revocations in force, so that no token
        revoked before this worker started is accepted by it."""
        self._node = node
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        _, protocol = await loop.create_unix_connection(
            lambda: bus.BusProtocol(self._on_message, self._on_lost), self._path)
        self._bus = protocol
        protocol.send(bus.Hello(self.index, os.getpid()))
        try:
            await asyncio.wait_for(self._welcome, _WELCOME_TIMEOUT)
        except TimeoutError:
            hub_log.warning("the supervisor did not send the revocations in force")

    async def stop(self) -> None:
        self._stopping = True
        if self._bus is not None and self._bus.transport is not None:
            self._bus.transport.close()

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> Awaitable[None] | None:
        """A stream event goes to the supervisor only and comes back numbered: the answer is
        a future resolved once this worker has delivered it (or could not: 10 s, or the bus
        is gone), so that what its publisher writes next follows it. Any other event is
        delivered here at once (None)."""
        assert self._node is not None
        if not (self._recovery and not droppable):
            self._node.deliver(user_ids, event, payload, exclude_user, droppable)
            if self._bus is not None:
                self._bus.send(bus.Publish(list(user_ids), event, payload, exclude_user,
                                           droppable))
            return None
        if self._bus is None:
            return None
        ticket = next(self._tickets)
        loop = asyncio.get_running_loop()
        if not self._sent:
            loop.call_later(1.0, self._sweep)
        delivered = loop.create_future()
        self._sent[ticket] = (loop.time() + _ACQUIRE_TIMEOUT, delivered)
        self._bus.send(bus.Publish(list(user_ids), event, payload, exclude_user, droppable,
                                   done=(self.index, ticket)))
        return delivered

    def _delivered(self, ticket: int) -> None:
        sent = self._sent.pop(ticket, None)
        if sent is not None and not sent[1].done():
            sent[1].set_result(None)

    def _sweep(self) -> None:
        """Give up on the stream events whose copy has not come back in time (oldest first)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for ticket, (deadline, _) in list(self._sent.items()):
            if deadline > now:
                break
            self._delivered(ticket)
        if self._sent:
            loop.call_later(1.0, self._sweep)

    async def _ask(self, message: bus.Acquire | bus.Replay
                   ) -> bus.Granted | bus.Replayed | None:
        """Send a request to the supervisor and wait for its answer (None: the bus is gone)."""
        if self._bus is None:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[message.request] = waiter
        self._bus.send(message)
        try:
            return await asyncio.wait_for(waiter, _ACQUIRE_TIMEOUT)
        finally:
            self._waiting.pop(message.request, None)

    async def acquire(self, user_id: int, limit: int,
                      since: StreamPosition | None = None) -> Grant | None:
        answer = await self._ask(bus.Acquire(next(self._requests), user_id, limit, None if
                                             since is None else (since.epoch, since.offset)))
        if not isinstance(answer, bus.Granted) or not answer.ok:
            return None
        return Grant(answer.epoch, answer.offset, answer.recovered, answer.events)

    async def replay(self, user_id: int, epoch: str, offset: int) -> Replayed | None:
        answer = await self._ask(bus.Replay(next(self._requests), user_id, epoch, offset))
        return answer.events if isinstance(answer, bus.Replayed) else None

    def release(self, user_id: int) -> None:
        if self._bus is not None:
            self._bus.send(bus.Release(user_id))

    async def drained(self, timeout: float) -> None:
        """Tell the supervisor this worker's calls in flight are done, and wait until every
        worker's are (so that their last broadcasts still find every connection open)."""
        if self._bus is None:
            return
        self._close_now = asyncio.get_running_loop().create_future()
        self._bus.send(bus.Drained())
        try:
            await asyncio.wait_for(self._close_now, max(0.0, timeout))
        except TimeoutError:
            hub_log.warning("closing before every worker drained")

    def _on_message(self, link: bus.BusProtocol, message: bus.Message) -> None:
        node = self._node
        assert node is not None
        match message:
            case bus.Publish():
                offsets = None if message.offsets is None else {
                    user_id: offset for user_id, offset
                    in zip(message.user_ids, message.offsets, strict=True) if offset}
                node.deliver(frozenset(message.user_ids), message.event, message.payload,
                             message.exclude_user, message.droppable, offsets)
                if message.done is not None and message.done[0] == self.index:
                    self._delivered(message.done[1])
            case bus.Delivered():
                self._delivered(message.ticket)
            case bus.Granted() | bus.Replayed():
                waiter = self._waiting.get(message.request)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
            case bus.StreamReset():
                node.reset(message.user_id, message.epoch, message.offset)
            case bus.PublishChat():
                node.publish_chat(message.chat_id, message.event, message.payload)
            case bus.Invalidate():
                node.invalidate(message.chat_id)
            case bus.Revoke():
                closed = node.revoke(message.user_id, message.reason, message.at)
                if message.request:
                    link.send(bus.Revoked(message.request, closed))
            case bus.Revocations():
                node.learn_revocations(message.records)
                if self._welcome is not None and not self._welcome.done():
                    self._welcome.set_result(None)
            case bus.CloseNow():
                if self._close_now is not None and not self._close_now.done():
                    self._close_now.set_result(None)
            case bus.MetricsRequest():
                link.send(bus.MetricsReply(message.request, node.collect()))
            case _:
                hub_log.warning("unexpected bus message %s", type(message).__name__)

    def _on_lost(self, _: bus.BusProtocol) -> None:
        self._bus = None
        for future in (self._close_now, self._welcome):
            if future is not None and not future.done():
                future.set_result(None)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result(None)
        for ticket in list(self._sent):
            self._delivered(ticket)
        if not self._stopping and self._node is not None:
            hub_log.error("lost the supervisor's bus: stopping this worker")
            self._node.lost()


def main() -> int:
    """Serve as the worker its supervisor started: its settings, index and bus path come
    from the environment the supervisor gave it."""
    try:
        settings, index, path = worker_from_environment()
    except ConfigError as exc:
        print(f"gogate: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format, worker=index)
    broker = BusBroker(path, index, settings.recovery_ttl > 0)
    return uvloop.run(run(settings, broker, index))


if __name__ == "__main__":
    sys.exit(main())
