"""The composition root of one worker: it builds every part, listens, and drains on shutdown.

Every part gets what it needs as constructor arguments, here and nowhere else. The broker comes
from outside: a lone gateway is given the in-process one, a worker of several the one that
reaches its supervisor; this module names neither.

The public port is a picows listener: ``/ws`` upgrades to the protocol of
:mod:`gogate.connection`; ``/health``, ``/ready`` and ``/`` are answered by the router itself;
other paths are offered to the gateway's ``pages`` (the demo page in development mode), and
what they do not answer is 404. A lone gateway also serves the internal API
(:mod:`gogate.internal`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import ssl
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, Final, TypeAlias

import msgspec
from picows import WSListener, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from gogate import __version__, lifecycle
from gogate.admission import Admission, OriginPolicy
from gogate.auth import Authenticator
from gogate.backend import BackendClient
from gogate.config import Settings
from gogate.connection import Connection
from gogate.dispatch import Dispatcher
from gogate.errors import ClientError, Close
from gogate.handlers import Context
from gogate.hub import Broker, Hub
from gogate.internal import InternalServer
from gogate.listener import listen
from gogate.log import server_log
from gogate.members import MembersCache
from gogate.metrics import Metrics, encode_families
from gogate.proxy import Address
from gogate.recovery import Recovery
from gogate.registry import SLICES, Registry
from gogate_fast import IMPLEMENTATION, PURE_ASKED, PURE_REASON, Flusher

__all__ = ["Gateway", "OriginPolicy", "Page", "Pages", "run"]

_INFO: Final = (b"gogate: BuzzChat WebSocket gateway\n"
                b"  /ws      WebSocket endpoint (first event: auth with a token)\n"
                b"  /health  health check (JSON)\n"
                b"  /ready   200 while accepting new connections, 503 once shutting down\n")
_JSON: Final = (("Content-Type", "application/json"),)

#: A page: status, body and headers.
Page: TypeAlias = tuple[int, bytes, Sequence[tuple[str, str]]]
#: Extra GET pages of the public port: given a path (without the query), its page, or None
#: when the path is not one of them. Called on the event loop: it must answer at once.
Pages: TypeAlias = Callable[[bytes], Page | None]


def _response(status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()
              ) -> WSUpgradeResponseWithListener:
    if status == 200:
        response = WSUpgradeResponse.create_ok_response(body, list(headers))
    else:
        response = WSUpgradeResponse.create_error_response(status, body, list(headers))
    return WSUpgradeResponseWithListener(response, None)


class Gateway:
    """One worker: listener, hub, backend pool, timers. ``start`` binds, ``stop`` drains.

    It is the :class:`~gogate.hub.Node` its broker serves. Alone (``worker`` None) it serves the
    internal API itself; as worker ``worker`` of a supervisor it shares the port
    (``SO_REUSEPORT``) with the others and names itself in the upgrade response.
    """

    def __init__(self, settings: Settings, broker: Broker, worker: int | None = None,
                 pages: Pages | None = None) -> None:
        self.settings = settings
        self.pages = pages
        self.worker = worker
        self.broker = broker
        self.metrics = Metrics()
        self.backend = BackendClient(settings.backend_api_url, settings.internal_api_key,
                                     timeout=settings.backend_timeout,
                                     max_connections=settings.backend_max_connections,
                                     observe=self.metrics.backend_call)
        self.members = MembersCache(self.backend.chat_members, settings.members_cache_ttl,
                                    metrics=self.metrics)
        self.hub = Hub(broker, self.metrics)
        self.recovery = Recovery(broker, self.metrics)
        self.flows = Context(self.backend, self.members, broker, self.metrics)
        self.auth = Authenticator.from_settings(settings, self.backend.validate_token,
                                                **self.metrics.auth_hooks())
        self.dispatcher = Dispatcher(settings, self.flows, self.hub, self.auth, self.recovery)
        loop = asyncio.get_running_loop()  # WRITE_DELAY is in milliseconds
        self.flusher = Flusher(loop.call_soon, settings.write_delay / 1000, loop.call_later)
        self.registry: Registry[Connection] = Registry()
        self.admission = Admission(settings, self.metrics.lifecycle)
        self.internal = None if worker is not None else InternalServer(
            self, settings.internal_host, settings.internal_port, settings.internal_api_key)
        # A worker among several names itself in the upgrade response (kept by the transport
        # for the connection's life, so a lone gateway adds nothing).
        self._upgrade_headers = None if worker is None else [("X-Gogate-Worker", str(worker))]
        self.port = settings.port
        self.stopping = asyncio.Event()  # set by a signal, or when the deployment is gone
        self.ready = True  # /ready: False from the moment a shutdown is asked for
        self._server: asyncio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # publishes to chats under way
        self.metrics.connections.set_function(lambda: len(self.registry.open))
        self.metrics.authenticated.set_function(lambda: self.hub.connections)
        self.metrics.users.set_function(lambda: self.hub.user_count)

    # --- what the broker asks (Node) and the internal API (Deployment) ------------------------

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool,
                offsets: dict[int, int] | None = None) -> None:
        behind = self.hub.deliver(user_ids, event, payload, exclude_user, droppable, offsets)
        if behind is not None:
            self.recovery.catch_up(behind)

    def reset(self, user_id: int, epoch: str, offset: int) -> None:
        self.recovery.reset(self.hub.sinks(user_id), epoch, offset)

    def held(self, user_id: int) -> int:
        return self.hub.held(user_id)

    def publish_users(self, user_ids: list[int], event: str, payload: bytes) -> None:
        self.broker.publish(frozenset(user_ids), event, payload, None, False)

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        self._spawn(self._publish_chat(chat_id, event, payload))

    async def _publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        try:
            members = await self.members.get(chat_id, patient=True)
        except ClientError as exc:
            server_log.warning("publish to chat %d not delivered: %s", chat_id, exc.message,
                               extra={"chat_id": chat_id, "event": event})
            return
        self.broker.publish(members, event, payload, None, False)

    def revoke(self, user_id: int, reason: str, at: float) -> int:
        self.auth.revoke(user_id, at)  # first: a reconnect racing the closes is refused already
        self.metrics.revocations.inc()
        held = [c for c in self.registry.open if c.user_id == user_id and not c.closing]
        for conn in held:
            conn.close(Close.REVOKED, reason)
        return len(held)

    def learn_revocations(self, records: list[tuple[int, float]]) -> None:
        for user_id, at in records:
            self.auth.revoke(user_id, at)

    async def disconnect(self, user_id: int, reason: str, at: float) -> int:
        return self.revoke(user_id, reason, at)

    def invalidate(self, chat_id: int) -> None:
        self.members.invalidate(chat_id)

    async def online(self, user_ids: list[int]) -> list[int]:
        return [user_id for user_id in user_ids if user_id in self.hub]

    async def metrics_text(self) -> bytes:
        return self.metrics.render()

    def collect(self) -> bytes:
        return encode_families(self.metrics.registry)

    def lost(self) -> None:
        self.stopping.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- routes of the public port ------------------------------------------------------------

    def _route(self, request: WSUpgradeRequest, client: Address | None = None
               ) -> WSListener | WSUpgradeResponseWithListener | None:
        """``client``: the client's address, given when proxies are configured."""
        path = request.path.split(b"?", 1)[0]
        if path == b"/ws":
            return self._upgrade(request, client)
        if path == b"/ready":
            return _response(200, b"ready\n") if self.ready else _response(503, b"draining\n")
        if path == b"/health":
            body = msgspec.json.encode({
                "status": "ok" if self.ready else "draining", "service": "gogate",
                "version": __version__, "implementation": IMPLEMENTATION, "pid": os.getpid(),
                "worker": self.worker or 0, "connections": len(self.registry.open)})
            return _response(200, body, _JSON)
        if path == b"/":
            return _response(200, _INFO)
        if self.pages is not None and (page := self.pages(path)) is not None:
            return _response(*page)
        return None

    def _upgrade(self, request: WSUpgradeRequest, client: Address | None
                 ) -> WSListener | WSUpgradeResponseWithListener:
        headers = request.headers
        if headers.get("upgrade", "").lower() != "websocket":
            return _response(426, b"426 Upgrade Required: /ws speaks WebSocket\n",
                             (("Upgrade", "websocket"),))
        refusal = self.admission.refusal(headers.get("origin"), len(self.registry.open),
                                         self.registry.accepting)
        if refusal is not None:
            return refusal.answer  # built once
        connection = Connection(self.settings, self.dispatcher, self.hub, self.flusher,
                                self.registry, self.metrics)
        connection.client = client
        if self._upgrade_headers is None:
            return connection
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response(self._upgrade_headers), connection)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await self.backend.start()
        await self.broker.start(self)
        if self.internal is not None:
            await self.internal.start()
        ssl_context = None
        if s.tls_cert_file:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(s.tls_cert_file, s.tls_key_file)
        self._server = await listen(self._route, s, ssl_context=ssl_context,
                                    reuse_port=self.worker is not None)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        # What exists now lives as long as the worker: keep it out of every collection, and
        # collect less often than the default (every 700 allocations) under connection churn.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        scheme = "wss" if ssl_context else "ws"
        server_log.info("gogate listening on %s://%s:%d/ws (hot path: %s, loop: %s)",
                        scheme, s.host, self.port, IMPLEMENTATION,
                        type(asyncio.get_running_loop()).__module__.split(".")[0])
        if PURE_REASON is not None:  # fine when asked for; by accident, every frame costs more
            (server_log.info if PURE_ASKED else server_log.warning)(
                "hot path: the pure-Python twin runs: %s", PURE_REASON)
        if not s.allowed_origins:
            server_log.warning("ALLOWED_ORIGINS is empty: WebSocket upgrades from any origin "
                               "are accepted")

    async def _beat(self) -> None:
        """Once a tick: heartbeats of every connection; now and then, cache pruning and the
        summary of what happened to connections."""
        s = self.settings
        tick = max(0.05, min(1.0, s.ping_period / 2, s.pong_wait / 4, s.auth_timeout / 5))
        last_prune = last_summary = time.monotonic()
        while True:
            await asyncio.sleep(tick / SLICES)  # every connection once a tick, a slice a step
            now = time.monotonic()
            self.registry.sweep(now)
            if now - last_summary >= lifecycle.SUMMARY_PERIOD:
                last_summary = now
                self.metrics.lifecycle.summarise(len(self.registry.open))
            if now - last_prune >= 10.0:
                last_prune = now
                self.members.prune()
                self.flows.typing_gate.prune()
                self.auth.prune()

    def request_shutdown(self) -> None:
        """SIGTERM or SIGINT (a worker of several gets it from its supervisor, every worker at
        once): ``/ready`` answers 503 from now on. Another signal changes nothing."""
        self.ready = False
        self.stopping.set()

    async def linger(self) -> None:
        """After a signal, ``SHUTDOWN_DELAY`` seconds of full service (new connections
        included) with ``/ready`` at 503, for load balancers to take this worker out before
        its connections are drained. Not when the deployment is gone: nothing to wait for."""
        delay = self.settings.shutdown_delay
        if self.ready or delay <= 0:
            server_log.info("shutdown requested")
            return
        server_log.info("shutdown requested: /ready answers 503, draining in %g s", delay)
        await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Stop accepting, let backend calls in flight finish, close every connection with
        1001, all within ``SHUTDOWN_TIMEOUT``."""
        if self._server is None:
            return
        deadline = time.monotonic() + self.settings.shutdown_timeout
        self.ready = self.registry.accepting = False
        self._server.close()
        server_log.info("draining %d connections", len(self.registry.open))
        pending = [t for c in self.registry.open if (t := c.pending_write) is not None]
        pending += [*self.dispatcher.tasks, *self._tasks]
        if pending:
            _, late = await asyncio.wait(pending,
                                         timeout=max(0.0, deadline - time.monotonic() - 1.0))
            for task in late:  # their flows tell the client what became of its event
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.broker.drained(deadline - time.monotonic() - 0.5)
        for conn in list(self.registry.open):
            conn.close(Close.SHUTDOWN)
        while self.registry.open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.flusher.flush()  # a delayed flush due later holds closed sinks: let them go now
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self.internal is not None:
            await self.internal.stop()
        await self.broker.stop()
        await self.backend.close()
        self._server = None
        server_log.info("gogate stopped")


async def run(settings: Settings, broker: Broker, worker: int | None = None,
              pages: Pages | None = None) -> int:
    """Serve until SIGTERM or SIGINT (or until the broker finds the deployment gone), then
    drain and return the exit code. ``pages`` answers extra GET paths of the public port."""
    gateway = Gateway(settings, broker, worker, pages)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.request_shutdown)
    try:
        await gateway.start()
    except OSError as exc:
        server_log.error("cannot listen: %s", exc.strerror or exc)
        await gateway.backend.close()
        if gateway.internal is not None:
            await gateway.internal.stop()
        return 1
    await gateway.stopping.wait()
    await gateway.linger()
    await gateway.stop()
    return 0
