"""How an event reaches the workers that hold its receivers, and how many connections each
user holds across them.

The hub hands every delivery to a :class:`Broker`; the broker brings it to the hub of each
worker that holds one of the receivers (``deliver``). :class:`LocalBroker` serves a single worker
in process: publishing is delivering. :class:`BusBroker` serves a worker among several on one
host: it delivers here at once and hands the event to the supervisor over the bus, which
forwards it only to the workers holding one of its receivers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Collection
from typing import Protocol

from gogate import bus
from gogate.log import hub_log

__all__ = ["Broker", "BusBroker", "Control", "Deliver", "LocalBroker"]

Deliver = Callable[[Collection[int], str, bytes, "int | None", bool], None]
"""``deliver(user_ids, event, payload, exclude_user, droppable)`` on one worker's hub."""


class Broker(Protocol):
    """Carries encoded events between the hubs of a deployment, and counts each user's
    connections across it."""

    def attach(self, deliver: Deliver, held: Callable[[int], int]) -> None:
        """Register the local hub: its delivery function, and how many connections of a
        user it holds."""

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        """Bring ``payload`` (one encoded event) to every connection of ``user_ids``, except
        those of ``exclude_user``, on every worker. Never waits."""

    async def acquire(self, user_id: int, limit: int) -> bool:
        """Count one more connection of the user unless it already holds ``limit`` (0 = no
        limit) anywhere in the deployment."""

    def release(self, user_id: int) -> None:
        """Count one connection of the user less."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalBroker:
    """The broker of a single worker: delivery happens in the publishing call."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._held: Callable[[int], int] = lambda user_id: 0

    def attach(self, deliver: Deliver, held: Callable[[int], int]) -> None:
        self._deliver = deliver
        self._held = held

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        if self._deliver is None:
            raise RuntimeError("no hub attached to the broker")
        self._deliver(user_ids, event, payload, exclude_user, droppable)

    async def acquire(self, user_id: int, limit: int) -> bool:
        # Nothing here waits, so the connection is in the hub before anyone else asks: the
        # hub's own registry is the count, with no table of its own.
        return not limit or self._held(user_id) < limit

    def release(self, user_id: int) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class Control(Protocol):
    """What the supervisor may ask of a worker over the bus."""

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None: ...

    def invalidate(self, chat_id: int) -> None: ...

    def render_metrics(self) -> bytes: ...


class BusBroker:
    """The broker of worker ``index`` among several on one host (see :mod:`gogate.bus`)."""

    def __init__(self, path: str, index: int) -> None:
        self._path = path
        self.index = index
        self._deliver: Deliver | None = None
        self._control: Control | None = None
        self._bus: bus.BusProtocol | None = None
        self._requests = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._stopping = False
        self._close_now: asyncio.Future[None] | None = None
        self.count: Callable[[str], None] = lambda direction: None  # broker traffic, "out"/"in"
        self.on_lost: Callable[[], None] = lambda: None  # the supervisor is gone

    def attach(self, deliver: Deliver, held: Callable[[int], int]) -> None:
        self._deliver = deliver

    def control(self, control: Control) -> None:
        self._control = control

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_unix_connection(
            lambda: bus.BusProtocol(self._on_message, self._on_lost), self._path)
        self._bus = protocol
        protocol.send(bus.Hello(self.index, os.getpid()))

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

    async def stop(self) -> None:
        self._stopping = True
        if self._bus is not None and self._bus.transport is not None:
            self._bus.transport.close()

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        assert self._deliver is not None
        self._deliver(user_ids, event, payload, exclude_user, droppable)
        if self._bus is not None:
            self.count("out")
            self._bus.send(bus.Publish(list(user_ids), event, payload, exclude_user, droppable))

    async def acquire(self, user_id: int, limit: int) -> bool:
        if self._bus is None:
            return False
        request = next(self._requests)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[request] = waiter
        self._bus.send(bus.Acquire(request, user_id, limit))
        try:
            return await asyncio.wait_for(waiter, 10.0)
        finally:
            self._waiting.pop(request, None)

    def release(self, user_id: int) -> None:
        if self._bus is not None:
            self._bus.send(bus.Release(user_id))

    def _on_message(self, _: bus.BusProtocol, message: bus.Message) -> None:
        match message:
            case bus.Publish():
                assert self._deliver is not None
                self.count("in")
                self._deliver(frozenset(message.user_ids), message.event, message.payload,
                              message.exclude_user, message.droppable)
            case bus.Granted():
                waiter = self._waiting.get(message.request)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message.ok)
            case bus.PublishChat():
                if self._control is not None:
                    self._control.publish_chat(message.chat_id, message.event, message.payload)
            case bus.Invalidate():
                if self._control is not None:
                    self._control.invalidate(message.chat_id)
            case bus.CloseNow():
                if self._close_now is not None and not self._close_now.done():
                    self._close_now.set_result(None)
            case bus.MetricsRequest():
                if self._control is not None and self._bus is not None:
                    text = self._control.render_metrics()
                    self._bus.send(bus.MetricsReply(message.request, text))
            case _:
                hub_log.warning("unexpected bus message %s", type(message).__name__)

    def _on_lost(self, _: bus.BusProtocol) -> None:
        self._bus = None
        if self._close_now is not None and not self._close_now.done():
            self._close_now.set_result(None)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result(False)
        if not self._stopping:
            hub_log.error("lost the supervisor's bus: stopping this worker")
            self.on_lost()
