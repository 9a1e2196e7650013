"""A worker's link to its supervisor: :class:`BusBroker`, the broker of a worker among several on
one host, and the entry point of the worker process (``python -m gogate.cluster.link``).

The broker delivers an event to this worker's connections at once and hands it to the
supervisor over the bus (:mod:`gogate.cluster.bus`), which forwards it only to the other
workers holding one of its receivers, and to the other hosts. The supervisor also counts each
user's connections, so the per-user limit is asked of it. Its requests for this worker (a
chat's publish, an invalidation, the metrics) go to the :class:`~gogate.hub.Node`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Collection
from typing import Final

import uvloop

from gogate.cluster import bus
from gogate.config import worker_from_environment
from gogate.errors import ConfigError
from gogate.hub import Node
from gogate.log import configure, hub_log
from gogate.server import run

__all__ = ["BusBroker", "main"]

_ACQUIRE_TIMEOUT: Final = 10.0  # seconds; the supervisor answers at once unless Redis is slow


class BusBroker:
    """The broker of worker ``index``, over the supervisor's bus at ``path``."""

    def __init__(self, path: str, index: int) -> None:
        self._path = path
        self.index = index
        self._node: Node | None = None
        self._bus: bus.BusProtocol | None = None
        self._requests = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._stopping = False
        self._close_now: asyncio.Future[None] | None = None

    async def start(self, node: Node) -> None:
        self._node = node
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_unix_connection(
            lambda: bus.BusProtocol(self._on_message, self._on_lost), self._path)
        self._bus = protocol
        protocol.send(bus.Hello(self.index, os.getpid()))

    async def stop(self) -> None:
        self._stopping = True
        if self._bus is not None and self._bus.transport is not None:
            self._bus.transport.close()

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        assert self._node is not None
        self._node.deliver(user_ids, event, payload, exclude_user, droppable)
        if self._bus is not None:
            self._bus.send(bus.Publish(list(user_ids), event, payload, exclude_user, droppable))

    async def acquire(self, user_id: int, limit: int) -> bool:
        if self._bus is None:
            return False
        request = next(self._requests)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[request] = waiter
        self._bus.send(bus.Acquire(request, user_id, limit))
        try:
            return await asyncio.wait_for(waiter, _ACQUIRE_TIMEOUT)
        finally:
            self._waiting.pop(request, None)

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
                node.deliver(frozenset(message.user_ids), message.event, message.payload,
                             message.exclude_user, message.droppable)
            case bus.Granted():
                waiter = self._waiting.get(message.request)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message.ok)
            case bus.PublishChat():
                node.publish_chat(message.chat_id, message.event, message.payload)
            case bus.Invalidate():
                node.invalidate(message.chat_id)
            case bus.CloseNow():
                if self._close_now is not None and not self._close_now.done():
                    self._close_now.set_result(None)
            case bus.MetricsRequest():
                link.send(bus.MetricsReply(message.request, node.collect()))
            case _:
                hub_log.warning("unexpected bus message %s", type(message).__name__)

    def _on_lost(self, _: bus.BusProtocol) -> None:
        self._bus = None
        if self._close_now is not None and not self._close_now.done():
            self._close_now.set_result(None)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result(False)
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
    return uvloop.run(run(settings, BusBroker(path, index), index))


if __name__ == "__main__":
    sys.exit(main())
