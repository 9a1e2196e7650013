"""The supervisor of ``--workers N``: it starts the worker processes, routes events between
them, serves the host's internal API and metrics, and restarts a worker that dies.

Every worker listens on ``PORT`` itself (``SO_REUSEPORT``) with its own loop, listener and
backend pool, and connects to the supervisor's bus (a Unix domain socket, :mod:`gogate.bus`).
The supervisor knows which users each worker holds, so it forwards an event only to the
workers holding one of its receivers, and it counts each user's connections across workers.
On SIGTERM or SIGINT it passes the signal on, waits for every worker to drain, and exits 0.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from gogate import bus
from gogate.config import Settings
from gogate.internal import InternalServer
from gogate.log import server_log
from gogate.relay import RedisRelay

__all__ = ["Supervisor", "merge_metrics", "run"]

_RESTART_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds; a dead worker is back within 15 s


class Worker:
    """One worker process and its bus connection."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.link: bus.BusProtocol | None = None
        self.held: dict[int, int] = {}  # user id → connections on this worker
        self.restarts = 0
        self.started_at = 0.0


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.workers = [Worker(i) for i in range(count)]
        self._dir = tempfile.mkdtemp(prefix="gogate-")
        self.bus_path = str(Path(self._dir) / "bus.sock")
        self._held: dict[int, dict[int, int]] = {}  # user id → {worker index: connections}
        self._stopping = False
        self._drained_workers: set[int] = set()
        self._requests = itertools.count(1)
        self._metrics_waiting: dict[int, tuple[asyncio.Future[None], dict[int, bytes]]] = {}
        self._next_chat_worker = itertools.cycle(range(count))
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.restarts = Counter("gogate_worker_restarts", "Workers restarted after dying.",
                                registry=self.registry)
        self.routed = Counter("gogate_bus_events", "Events forwarded between workers.",
                              ["direction"], registry=self.registry)
        Gauge("gogate_workers", "Worker processes running.", registry=self.registry
              ).set_function(lambda: sum(1 for w in self.workers if w.link is not None))
        self.redis_events = Counter("gogate_redis_events",
                                    "Events between hosts through Redis, by outcome "
                                    "(published, received, unroutable).", ["outcome"],
                                    registry=self.registry)
        self.relay = None if not settings.redis_url else RedisRelay(
            settings.redis_url, self._from_redis, self._host_counts,
            lambda outcome: self.redis_events.labels(outcome).inc())
        self._tasks: set[asyncio.Task[None]] = set()
        self.internal = InternalServer(self, settings.internal_host, settings.internal_port,
                                       settings.internal_api_key)

    def _spawn_task(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _host_counts(self) -> dict[int, int]:
        return {user_id: sum(h.values()) for user_id, h in self._held.items()}

    def _from_redis(self, message: bus.Publish | bus.Invalidate) -> None:
        if isinstance(message, bus.Publish):
            self._route(message, origin=None, from_redis=True)
        else:
            self._invalidate_here(message.chat_id)

    # --- the bus ------------------------------------------------------------------------------

    def _on_message(self, link: bus.BusProtocol, message: bus.Message) -> None:
        match message:
            case bus.Publish():
                self._route(message, origin=link.worker)
            case bus.Acquire():
                if self.relay is None:
                    link.send(bus.Granted(message.request,
                                          self._acquire(link, message.user_id, message.limit)))
                else:
                    self._spawn_task(self._acquire_across_hosts(link, message))
            case bus.Release():
                self._release(link, message.user_id)
                if self.relay is not None:
                    self._spawn_task(self.relay.release(message.user_id))
            case bus.Hello():
                worker = self.workers[message.worker]
                link.worker = message.worker
                worker.link = link
                server_log.info("worker %d ready (pid %d)", message.worker, message.pid,
                                extra={"worker": message.worker})
            case bus.Drained():
                self._drained(link)
            case bus.MetricsReply():
                waiting = self._metrics_waiting.get(message.request)
                if waiting is not None and link.worker is not None:
                    waiting[1][link.worker] = message.text
                    running = sum(1 for w in self.workers if w.link is not None)
                    if len(waiting[1]) >= running and not waiting[0].done():
                        waiting[0].set_result(None)
            case _:
                server_log.warning("unexpected bus message %s", type(message).__name__)

    def _drained(self, link: bus.BusProtocol) -> None:
        """A stopping worker's calls are done; once every worker's are, all close. A worker
        stopped on its own closes at once."""
        if not self._stopping:
            link.send(bus.CloseNow())
            return
        if link.worker is not None:
            self._drained_workers.add(link.worker)
        self._close_when_drained()

    def _close_when_drained(self) -> None:
        running = {w.index for w in self.workers if w.link is not None}
        if running <= self._drained_workers:
            for worker in self.workers:
                if worker.link is not None:
                    worker.link.send(bus.CloseNow())

    def _on_lost(self, link: bus.BusProtocol) -> None:
        if link.worker is None:
            return
        worker = self.workers[link.worker]
        if worker.link is link:
            worker.link = None
        if self.relay is not None and worker.held:
            self._spawn_task(self.relay.release_many(dict(worker.held)))
        for user_id in worker.held:
            holders = self._held.get(user_id)
            if holders is not None:
                holders.pop(worker.index, None)
                if not holders:
                    del self._held[user_id]
        worker.held.clear()
        if self._stopping:
            self._close_when_drained()  # a worker gone does not hold up the others

    def _acquire(self, link: bus.BusProtocol, user_id: int, limit: int) -> bool:
        if link.worker is None:
            return False
        holders = self._held.setdefault(user_id, {})
        if limit and sum(holders.values()) >= limit:
            if not holders:
                del self._held[user_id]
            return False
        holders[link.worker] = holders.get(link.worker, 0) + 1
        worker = self.workers[link.worker]
        worker.held[user_id] = worker.held.get(user_id, 0) + 1
        return True

    async def _acquire_across_hosts(self, link: bus.BusProtocol, message: bus.Acquire) -> None:
        """The per-user limit counted in Redis; this host's count alone while Redis is out."""
        assert self.relay is not None
        granted = await self.relay.acquire(message.user_id, message.limit)
        if link.worker is None or self.workers[link.worker].link is not link:
            if granted:  # the worker died meanwhile: its connection never came
                await self.relay.release(message.user_id)
            return
        if granted is None:
            ok = self._acquire(link, message.user_id, message.limit)
        elif granted:
            ok = self._acquire(link, message.user_id, 0)
        else:
            ok = False
        link.send(bus.Granted(message.request, ok))

    def _release(self, link: bus.BusProtocol, user_id: int) -> None:
        if link.worker is None:
            return
        worker = self.workers[link.worker]
        count = worker.held.get(user_id, 0) - 1
        holders = self._held.get(user_id, {})
        if count > 0:
            worker.held[user_id] = count
            holders[link.worker] = count
        else:
            worker.held.pop(user_id, None)
            holders.pop(link.worker, None)
            if not holders:
                self._held.pop(user_id, None)

    def _route(self, message: bus.Publish, origin: int | None, from_redis: bool = False) -> None:
        """Forward an event to every worker (but its origin) holding one of its receivers,
        and, unless it came from there, to the other hosts through Redis."""
        if self.relay is not None and not from_redis:
            self.relay.publish(message)
        targets: set[int] = set()
        held = self._held
        for user_id in message.user_ids:
            holders = held.get(user_id)
            if holders:
                targets.update(holders)
        targets.discard(origin)  # type: ignore[arg-type]
        if not targets:
            return
        frame = bus.encode(message)
        for index in targets:
            link = self.workers[index].link
            if link is not None and link.transport is not None:
                link.transport.write(frame)
                self.routed.labels("forwarded").inc()

    # --- the internal API (gogate.internal.Deployment) ----------------------------------------

    def publish_users(self, user_ids: list[int], event: str, payload: bytes) -> None:
        self._route(bus.Publish(user_ids, event, payload), origin=None)

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        """One worker resolves the chat's members (its cache) and publishes to all."""
        for _ in self.workers:
            link = self.workers[next(self._next_chat_worker)].link
            if link is not None:
                link.send(bus.PublishChat(chat_id, event, payload))
                return
        server_log.error("publish to chat %d dropped: no worker is running", chat_id)

    def invalidate(self, chat_id: int) -> None:
        self._invalidate_here(chat_id)
        if self.relay is not None:
            self._spawn_task(self.relay.broadcast(bus.Invalidate(chat_id)))

    def _invalidate_here(self, chat_id: int) -> None:
        for worker in self.workers:
            if worker.link is not None:
                worker.link.send(bus.Invalidate(chat_id))

    async def online(self, user_ids: list[int]) -> list[int]:
        elsewhere = set() if self.relay is None else await self.relay.online(user_ids) or set()
        return [u for u in user_ids if u in self._held or u in elsewhere]

    async def metrics_text(self) -> bytes:
        """Every worker's metrics, labelled ``worker``, and the supervisor's own."""
        request = next(self._requests)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        texts: dict[int, bytes] = {}
        self._metrics_waiting[request] = (done, texts)
        try:
            for worker in self.workers:
                if worker.link is not None:
                    worker.link.send(bus.MetricsRequest(request))
            if any(w.link is not None for w in self.workers):
                await asyncio.wait_for(asyncio.shield(done), 2.0)
        except TimeoutError:
            pass
        finally:
            self._metrics_waiting.pop(request, None)
        return merge_metrics(texts) + generate_latest(self.registry)

    # --- processes ----------------------------------------------------------------------------

    async def _spawn(self, worker: Worker) -> None:
        env = dict(os.environ)
        env["GOGATE_WORKER_SETTINGS"] = msgspec.json.encode(self.settings).decode()
        env["GOGATE_WORKER_INDEX"] = str(worker.index)
        env["GOGATE_BUS"] = self.bus_path
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gogate.worker", env=env)
        worker.started_at = time.monotonic()
        server_log.info("worker %d started (pid %d)", worker.index, worker.process.pid,
                        extra={"worker": worker.index})

    async def _watch(self, worker: Worker) -> None:
        """Restart the worker whenever it dies, with backoff, until the supervisor stops."""
        failures = 0
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self._stopping:
                return
            lived = time.monotonic() - worker.started_at
            failures = 0 if lived > 30 else failures + 1
            delay = _RESTART_BACKOFF[min(failures, len(_RESTART_BACKOFF) - 1)]
            server_log.error("worker %d exited with %s; restarting in %.1f s", worker.index,
                             code, delay, extra={"worker": worker.index})
            self.restarts.inc()
            worker.restarts += 1
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(worker)
            except OSError as exc:
                server_log.error("cannot start worker %d: %s", worker.index, exc,
                                 extra={"worker": worker.index})
                worker.started_at = time.monotonic()
                continue
            if self._stopping and worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_unix_server(
            lambda: bus.BusProtocol(self._on_message, self._on_lost), self.bus_path)
        try:
            return await self._supervise(stop)
        finally:
            server.close()
            Path(self.bus_path).unlink(missing_ok=True)
            os.rmdir(self._dir)

    async def _supervise(self, stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        try:
            await self.internal.start()
            if self.relay is not None:
                await self.relay.start()
        except OSError as exc:
            server_log.error("cannot listen on the internal port: %s", exc.strerror or exc)
            return 1
        for worker in self.workers:
            await self._spawn(worker)
        watchers = [loop.create_task(self._watch(w)) for w in self.workers]
        server_log.info("supervising %d workers on port %d", len(self.workers),
                        self.settings.port)
        await stop.wait()
        self._stopping = True
        server_log.info("shutdown requested: draining every worker")
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = self.settings.shutdown_timeout + 5.0
        pending = [w.process.wait() for w in self.workers if w.process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*pending), deadline)
        except TimeoutError:
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()
        for task in watchers:
            task.cancel()
        if self.relay is not None:
            await self.relay.stop()
        await self.internal.stop()
        server_log.info("all workers stopped")
        return 0


def merge_metrics(texts: dict[int, bytes]) -> bytes:
    """Several workers' Prometheus texts as one, each sample labelled with its worker."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for index, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text.decode()):
            entry = families.setdefault(family.name, (family.type, family.documentation, []))
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(index)}
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                entry[2].append(f"{sample.name}{{{rendered}}} {_number(sample.value)}")
    lines: list[str] = []
    for name, (kind, doc, samples) in families.items():
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


async def run(settings: Settings, count: int) -> int:
    return await Supervisor(settings, count).run()
