"""One host of the deployment, as its supervisor sees it: the workers' ends of the bus, who
holds whom, and where each event goes.

Events reach this host from two kinds of peer: its workers (over the bus, :mod:`.bus`) and the
other hosts (through Redis, :mod:`.relay`). Whatever their source, they take one route: to
every worker holding one of the receivers (the :class:`~.presence.Presence` table) but the one
it came from, and, unless it came from there, to the other hosts. With recovery on, a stream
event is first numbered by the host's one authority, the supervisor's
:class:`~gogate.streams.StreamStore` (or Redis, :mod:`.streams_redis`), then forwarded with its
offsets to every worker holding a receiver, its origin included. The host also serves the
internal API (it implements :class:`gogate.internal.Deployment`) and its ``/metrics``
(:mod:`.metrics`); the processes behind it are the supervisor's (:mod:`.supervisor`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any, Final

from gogate.auth import Revocations
from gogate.cluster import authority, bus
from gogate.cluster.metrics import HostMetrics
from gogate.cluster.presence import Presence
from gogate.cluster.relay import RedisRelay
from gogate.cluster.streams_redis import RedisStreams
from gogate.log import server_log
from gogate.streams import StreamStore

__all__ = ["Host"]

_METRICS_WAIT: Final = 2.0  # seconds a scrape waits for the workers' families
_REVOKE_WAIT: Final = 2.0  # seconds a disconnect waits for the workers' closes


class Host:
    """The supervisor's side of the bus for ``workers`` workers, linked to the other hosts
    through Redis when ``redis_url`` is set; users' streams keep ``recovery_size`` events for
    ``recovery_ttl`` seconds (0: recovery off)."""

    def __init__(self, workers: int, redis_url: str = "", recovery_ttl: float = 0.0,
                 recovery_size: int = 1000) -> None:
        self.links: list[bus.BusProtocol | None] = [None] * workers
        self.presence = Presence()
        self.metrics = HostMetrics(workers, lambda: self.running)
        self.recovery = recovery_ttl > 0
        self.store = StreamStore(recovery_size, recovery_ttl) if (
            self.recovery and not redis_url) else None
        self.relay = None if not redis_url else RedisRelay(
            redis_url, self, self.metrics.redis_events,
            RedisStreams(recovery_ttl, recovery_size, self.metrics.redis_events,
                         self.metrics.stream_resets, self.arrived))
        self.metrics.watch_streams(self.store, None if self.relay is None
                                   else self.relay.streams.outbox)
        self._pruning: asyncio.Task[None] | None = None
        self.stopping = False
        self._drained: set[int] = set()
        self._next_chat_worker = itertools.cycle(range(workers))
        self._requests = itertools.count(1)
        # Requests put to every worker (a scrape, a revocation): the answers so far, by worker.
        self._asked: dict[int, tuple[asyncio.Future[None], dict[int, Any]]] = {}
        # Revocations in force, handed to every worker that says hello (a new or replaced one).
        self.revocations = Revocations()
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
        if self.store is not None:
            self._pruning = asyncio.get_running_loop().create_task(authority.prune(self.store))

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        if self._pruning is not None:
            self._pruning.cancel()
            await asyncio.gather(self._pruning, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- from the workers ---------------------------------------------------------------------

    def _on_message(self, link: bus.BusProtocol, message: bus.Message) -> None:
        if isinstance(message, bus.Hello):
            link.worker = message.worker
            self.links[message.worker] = link
            link.send(bus.Revocations(list(self.revocations)))
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
                    link.send(authority.grant(self.store, message, ok))
                else:
                    self._spawn(self._acquire_across_hosts(link, worker, message))
            case bus.Release():
                self.presence.release(worker, message.user_id)
                if self.store is not None:
                    self.store.close(message.user_id)
                if self.relay is not None:
                    self._spawn(self.relay.release(message.user_id))
            case bus.Replay():
                if self.relay is None:  # answered in the same step, like a grant
                    link.send(bus.Replayed(message.request, None if self.store is None else
                                           self.store.since(message.user_id, message.epoch,
                                                            message.offset)))
                else:
                    self._spawn(self._replay_across_hosts(link, message))
            case bus.Drained():
                self._on_drained(link, worker)
            case bus.Revoked():
                self._answered(message.request, worker, message.closed)
            case bus.MetricsReply():
                self._answered(message.request, worker, message.families)
            case _:
                server_log.warning("unexpected bus message %s", type(message).__name__)

    async def _acquire_across_hosts(self, link: bus.BusProtocol, worker: int,
                                    message: bus.Acquire) -> None:
        """The per-user limit counted in Redis, which also opens the stream; this host's count
        alone while Redis is out. The worker is counted as a holder first, so that no event
        numbered while Redis answers misses it."""
        assert self.relay is not None
        uid = message.user_id
        self.presence.acquire(worker, uid, 0)
        granted = await self.relay.acquire(uid, message.limit, message.since)
        if self.links[worker] is not link:
            if granted is not None and granted.ok:  # the worker died: its connection never came
                await self.relay.release(uid)
            return
        if granted is None:
            ok = not message.limit or self.presence.count(uid) <= message.limit
            granted = self.relay.streams.outage_grant(uid, message.since) if ok else None
        if granted is None or not granted.ok:
            self.presence.release(worker, uid)
            granted = bus.Granted(0, False)
        granted.request = message.request
        link.send(granted)

    async def _replay_across_hosts(self, link: bus.BusProtocol, message: bus.Replay) -> None:
        """Every kept event after a position, from the streams in Redis."""
        assert self.relay is not None
        events = None if not self.recovery else await self.relay.replay(
            message.user_id, message.epoch, message.offset)
        link.send(bus.Replayed(message.request, events))

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
        if self.store is not None:
            authority.close_all(self.store, held)
        if self.relay is not None and held:
            self._spawn(self.relay.release_many(held))
        if self.stopping:
            self._close_when_drained()  # a worker gone does not hold up the others

    # --- routing ------------------------------------------------------------------------------

    def route(self, message: bus.Publish, origin: int | None = None,
              from_hosts: bool = False) -> None:
        """Forward an event to every worker (but its origin) holding one of its receivers,
        and, unless it came from there, to the other hosts. A stream event new to the
        deployment is numbered first and reaches its origin too (which did not deliver it);
        with Redis it comes back numbered, through :meth:`arrived`, unless Redis is out."""
        if not from_hosts:
            if self.recovery and not message.droppable:
                origin = None
                if self.store is not None:
                    authority.number(self.store, message)
                elif self.relay is not None and self.relay.publish(message, stream=True):
                    return
            elif self.relay is not None:
                self.relay.publish(message)
        targets = self.presence.holders(message.user_ids)
        targets.discard(origin)  # type: ignore[arg-type]
        done = message.done
        if done is not None and done[0] not in targets and done[0] < len(self.links) and (
                link := self.links[done[0]]):
            link.send(bus.Delivered(done[1]))  # its publisher holds no receiver of it
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

    def arrived(self, message: bus.Publish | bus.Invalidate | bus.Revoke) -> None:
        if isinstance(message, bus.Publish):
            self.route(message, from_hosts=True)
        else:
            if isinstance(message, bus.Revoke):
                self.revocations.revoke(message.user_id, message.at)
            self._broadcast(message)

    def in_force(self) -> list[tuple[int, float]]:
        return list(self.revocations)

    def learn(self, records: list[tuple[int, float]]) -> None:
        """Revocations another host made (kept in Redis): those this host did not know yet
        go to every worker, which refuses the tokens they cover."""
        new = [(user_id, at) for user_id, at in records
               if (known := self.revocations.since(user_id)) is None or known < at]
        for user_id, at in new:
            self.revocations.revoke(user_id, at)
        if new:
            self._broadcast(bus.Revocations(new))

    def totals(self) -> dict[int, int]:
        return self.presence.totals()

    def reset(self, user_id: int, epoch: str, offset: int) -> None:
        """The user's stream was replaced: every worker holding the user tells its
        connections (after every event forwarded to it before)."""
        message = bus.StreamReset(user_id, epoch, offset)
        for index in self.presence.holders((user_id,)):
            link = self.links[index]
            if link is not None:
                link.send(message)

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

    async def disconnect(self, user_id: int, reason: str, at: float) -> int:
        """Revoke the user on every worker of every host; returns once this host's workers
        have closed the user's connections (or after a while), with how many they closed."""
        if self.relay is not None:
            self._spawn(self.relay.revoke(bus.Revoke(user_id, reason, at)))
        self.revocations.revoke(user_id, at)
        closed, complete = await self._ask_workers(
            lambda request: bus.Revoke(user_id, reason, at, request), _REVOKE_WAIT)
        if not complete:
            server_log.warning("a worker did not confirm the disconnect of user %d", user_id)
        return sum(closed.values())

    async def online(self, user_ids: list[int]) -> list[int]:
        elsewhere = set() if self.relay is None else await self.relay.online(user_ids) or set()
        return [u for u in user_ids if u in self.presence or u in elsewhere]

    async def metrics_text(self) -> bytes:
        """Every worker's metrics, labelled ``worker``, and the supervisor's own."""
        replies, _ = await self._ask_workers(bus.MetricsRequest, _METRICS_WAIT)
        return self.metrics.render(replies)

    async def _ask_workers(self, ask: Callable[[int], bus.Message], wait: float
                           ) -> tuple[dict[int, Any], bool]:
        """Put a request (built from its number) to every worker and gather the answers by
        worker, and whether every worker answered within ``wait`` seconds."""
        request = next(self._requests)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answers: dict[int, Any] = {}
        self._asked[request] = (done, answers)
        try:
            self._broadcast(ask(request))
            if self.running:
                await asyncio.wait_for(asyncio.shield(done), wait)
        except TimeoutError:
            return answers, False
        finally:
            self._asked.pop(request, None)
        return answers, True

    def _answered(self, request: int, worker: int, answer: Any) -> None:
        asked = self._asked.get(request)
        if asked is not None:
            asked[1][worker] = answer
            if len(asked[1]) >= self.running and not asked[0].done():
                asked[0].set_result(None)
