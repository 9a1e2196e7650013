"""One host of the deployment, as its supervisor sees it: the workers' ends of the bus, who
holds whom, and where each event goes.

Events reach this host from two kinds of peer: its workers (over the bus, :mod:`.bus`) and the
other hosts (through Redis, :mod:`.relay`). Whatever their source, they take one route: to
every worker holding one of the receivers (the :class:`~.presence.Presence` table) but the one
it came from, and, unless it came from there, to the other hosts. The host also serves the
internal API (it implements :class:`gogate.internal.Deployment`) and its ``/metrics``
(:mod:`.metrics`); the processes behind it are the supervisor's (:mod:`.supervisor`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, Final

from gogate.cluster import bus
from gogate.cluster.metrics import HostMetrics
from gogate.cluster.presence import Presence
from gogate.cluster.relay import RedisRelay
from gogate.log import server_log

__all__ = ["Host"]

_METRICS_WAIT: Final = 2.0  # seconds a scrape waits for the workers' families


class Host:
    """The supervisor's side of the bus for ``workers`` workers, linked to the other hosts
    through Redis when ``redis_url`` is set."""

    def __init__(self, workers: int, redis_url: str = "") -> None:
        self.links: list[bus.BusProtocol | None] = [None] * workers
        self.presence = Presence()
        self.metrics = HostMetrics(workers, lambda: self.running)
        self.relay = None if not redis_url else RedisRelay(
            redis_url, self, self.metrics.redis_events)
        self.stopping = False
        self._drained: set[int] = set()
        self._next_chat_worker = itertools.cycle(range(workers))
        self._requests = itertools.count(1)
        self._scrapes: dict[int, tuple[asyncio.Future[None], dict[int, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        """Workers connected to the bus."""
        return sum(1 for link in self.links if link is not None)

    def connection(self) -> bus.BusProtocol:
        """The protocol of one new connection to the bus (a worker)."""
        return bus.BusProtocol(self._on_message, self._on_lost)

    async def start(self) -> None:
        if self.relay is not None:
            await self.relay.start()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- from the workers ---------------------------------------------------------------------

    def _on_message(self, link: bus.BusProtocol, message: bus.Message) -> None:
        if isinstance(message, bus.Hello):
            link.worker = message.worker
            self.links[message.worker] = link
            server_log.info("worker %d ready (pid %d)", message.worker, message.pid,
                            extra={"worker": message.worker})
            return
        worker = link.worker
        if worker is None:
            server_log.warning("bus message %s before the worker said hello",
                               type(message).__name__)
            return
        match message:
            case bus.Publish():
                self.metrics.sent_by[worker].inc()
                self.route(message, origin=worker)
            case bus.Acquire():
                if self.relay is None:
                    ok = self.presence.acquire(worker, message.user_id, message.limit)
                    link.send(bus.Granted(message.request, ok))
                else:
                    self._spawn(self._acquire_across_hosts(link, worker, message))
            case bus.Release():
                self.presence.release(worker, message.user_id)
                if self.relay is not None:
                    self._spawn(self.relay.release(message.user_id))
            case bus.Drained():
                self._on_drained(link, worker)
            case bus.MetricsReply():
                scrape = self._scrapes.get(message.request)
                if scrape is not None:
                    scrape[1][worker] = message.families
                    if len(scrape[1]) >= self.running and not scrape[0].done():
                        scrape[0].set_result(None)
            case _:
                server_log.warning("unexpected bus message %s", type(message).__name__)

    async def _acquire_across_hosts(self, link: bus.BusProtocol, worker: int,
                                    message: bus.Acquire) -> None:
        """The per-user limit counted in Redis; this host's count alone while Redis is out."""
        assert self.relay is not None
        granted = await self.relay.acquire(message.user_id, message.limit)
        if self.links[worker] is not link:
            if granted:  # the worker died meanwhile: its connection never came
                await self.relay.release(message.user_id)
            return
        if granted is None:
            ok = self.presence.acquire(worker, message.user_id, message.limit)
        else:
            ok = granted and self.presence.acquire(worker, message.user_id, 0)
        link.send(bus.Granted(message.request, ok))

    def _on_drained(self, link: bus.BusProtocol, worker: int) -> None:
        """A stopping worker's calls are done; once every worker's are, all close. A worker
        stopped on its own closes at once."""
        if not self.stopping:
            link.send(bus.CloseNow())
            return
        self._drained.add(worker)
        self._close_when_drained()

    def _close_when_drained(self) -> None:
        running = {index for index, link in enumerate(self.links) if link is not None}
        if running <= self._drained:
            self._broadcast(bus.CloseNow())

    def _on_lost(self, link: bus.BusProtocol) -> None:
        worker = link.worker
        if worker is None:
            return
        if self.links[worker] is link:
            self.links[worker] = None
        held = self.presence.forget(worker)
        if self.relay is not None and held:
            self._spawn(self.relay.release_many(held))
        if self.stopping:
            self._close_when_drained()  # a worker gone does not hold up the others

    # --- routing ------------------------------------------------------------------------------

    def route(self, message: bus.Publish, origin: int | None = None,
              from_hosts: bool = False) -> None:
        """Forward an event to every worker (but its origin) holding one of its receivers,
        and, unless it came from there, to the other hosts."""
        if self.relay is not None and not from_hosts:
            self.relay.publish(message)
        targets = self.presence.holders(message.user_ids)
        targets.discard(origin)  # type: ignore[arg-type]
        if not targets:
            return
        frame = bus.encode(message)
        for index in targets:
            link = self.links[index]
            if link is not None and link.transport is not None:
                link.transport.write(frame)
                self.metrics.forwarded.inc()
                self.metrics.sent_to[index].inc()

    def _broadcast(self, message: bus.Message) -> None:
        for link in self.links:
            if link is not None:
                link.send(message)

    # --- from the other hosts (gogate.cluster.relay.Local) ------------------------------------

    def arrived(self, message: bus.Publish | bus.Invalidate) -> None:
        if isinstance(message, bus.Publish):
            self.route(message, from_hosts=True)
        else:
            self._broadcast(message)

    def totals(self) -> dict[int, int]:
        return self.presence.totals()

    # --- the internal API (gogate.internal.Deployment) ----------------------------------------

    def publish_users(self, user_ids: list[int], event: str, payload: bytes) -> None:
        self.route(bus.Publish(user_ids, event, payload))

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        """One worker resolves the chat's members (its cache) and publishes to all."""
        for _ in self.links:
            link = self.links[next(self._next_chat_worker)]
            if link is not None:
                link.send(bus.PublishChat(chat_id, event, payload))
                return
        server_log.error("publish to chat %d dropped: no worker is running", chat_id)

    def invalidate(self, chat_id: int) -> None:
        message = bus.Invalidate(chat_id)
        self._broadcast(message)
        if self.relay is not None:
            self._spawn(self.relay.broadcast(message))

    async def online(self, user_ids: list[int]) -> list[int]:
        elsewhere = set() if self.relay is None else await self.relay.online(user_ids) or set()
        return [u for u in user_ids if u in self.presence or u in elsewhere]

    async def metrics_text(self) -> bytes:
        """Every worker's metrics, labelled ``worker``, and the supervisor's own."""
        request = next(self._requests)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        replies: dict[int, bytes] = {}
        self._scrapes[request] = (done, replies)
        try:
            self._broadcast(bus.MetricsRequest(request))
            if self.running:
                await asyncio.wait_for(asyncio.shield(done), _METRICS_WAIT)
        except TimeoutError:
            pass
        finally:
            self._scrapes.pop(request, None)
        return self.metrics.render(replies)
