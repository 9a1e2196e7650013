"""Routing between hosts through Redis (``REDIS_URL``): the host's peer link to the others, run
by each host's supervisor (:mod:`gogate.cluster.host`).

The scheme routes by receiver. Each host has an id and a channel ``gogate:host:<id>``, and
keeps ``gogate:alive:<id>`` alive (30 s expiry, refreshed every 10 s). For each user online
anywhere, the hash ``gogate:user:<user id>`` maps host ids to that host's connection count.

- **Publishing.** An event for users U runs one Lua script over U's hashes. The script
  publishes the event once to each live host holding one of them, the origin excepted. The
  cost per event is O(|U|) hash reads inside Redis and one message per target host,
  whatever the number of hosts.
- **Presence.** It changes only when a user's first connection on a host opens or the last
  one closes. The per-user limit is checked and counted in the same hashes, by a script
  that ignores and removes dead hosts.
- **Revocations.** A disconnect is broadcast to every host, and kept in the hash
  ``gogate:revoked`` (user id → the latest revocation, seconds since the epoch; fields older
  than a day are pruned on each write). Every host merges its own into the hash and reads the
  others' when it connects and every 10 s, so a host that starts, or comes back after an
  outage, refuses the same tokens as the others.
- **Streams.** With recovery on, stream events are numbered in Redis and reach every host,
  the origin included, from its subscription (:mod:`.streams_redis`).
- **Outages.** While Redis is unreachable, each host keeps delivering to its own workers,
  keeps the events other hosts are owed (up to 10,000, for 60 s), and retries with backoff.
  On reconnecting it takes a fresh host id, registers the users it holds again, delivers what
  it kept and starts anew the streams of the users those events reached. The old id's entries
  die with its alive key, so nothing is delivered twice. The scripts are in :mod:`.scripts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

import msgspec
import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from gogate.auth.revocations import MIN_HORIZON
from gogate.cluster import bus, scripts
from gogate.cluster.streams_redis import RedisStreams, read_resets, read_stream_event
from gogate.log import server_log

__all__ = ["Local", "RedisRelay"]

_ALIVE_TTL: Final = 30
_ALIVE_EVERY: Final = 10.0
_BROADCAST: Final = "gogate:all"
_REVOKED: Final = "gogate:revoked"
_Answer = TypeVar("_Answer")

# KEYS[1]: the revocations hash; ARGV: oldest kept, then user id / at pairs. Keeps the latest
# revocation of each user, drops those past the horizon, returns the whole hash.
_REVOKE = """
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local fields = redis.call('HGETALL', KEYS[1])
local kept = {}
for i = 1, #fields, 2 do
  if tonumber(fields[i + 1]) <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    kept[#kept + 1] = fields[i]
    kept[#kept + 1] = fields[i + 1]
  end
end
return kept
"""


class _Envelope(msgspec.Struct, array_like=True):
    origin: str
    message: bus.Publish | bus.Invalidate | bus.Revoke


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Envelope).decode


def _open(data: bytes) -> tuple[str, bus.Publish | bus.Invalidate | bus.Revoke]:
    envelope = _decode(data)
    return envelope.origin, envelope.message


def _user_key(user_id: int) -> str:
    return f"gogate:user:{user_id}"


class Local(Protocol):
    """What the relay needs of this host."""

    def arrived(self, message: bus.Publish | bus.Invalidate | bus.Revoke) -> None:
        """An event, an invalidation or a revocation from another host, for this host's
        workers."""

    def totals(self) -> dict[int, int]:
        """User id → connections on this host, for every user it holds."""

    def reset(self, user_id: int, epoch: str, offset: int) -> None:
        """The user's stream was replaced: its connections here continue from there."""

    def in_force(self) -> list[tuple[int, float]]:
        """The revocations this host knows, as (user id, at)."""

    def learn(self, records: list[tuple[int, float]]) -> None:
        """The revocations kept in Redis, as (user id, at)."""


class RedisRelay:
    """This host's link to the others. ``events`` counts, by outcome, the events it carries;
    ``streams`` numbers stream events and keeps what Redis cannot take."""

    def __init__(self, url: str, local: Local, events: Counter, streams: RedisStreams) -> None:
        self._url = url
        self._local = local
        self._outcomes = {outcome: events.labels(outcome)
                          for outcome in ("published", "received", "unroutable")}
        self.streams = streams
        self.host = ""
        self.connected = False
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.delete(f"gogate:alive:{self.host}")
            await self._client.aclose()

    async def _run(self) -> None:
        """Connect, register, listen; on any failure start over with backoff."""
        delay = 0.5
        while not self._stopping:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    server_log.error("lost Redis (%s): delivering within this host only",
                                     type(exc).__name__)
                else:
                    server_log.warning("cannot reach Redis (%s); retrying in %.1f s",
                                       type(exc).__name__, delay)
            self.connected = self.streams.live = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _session(self) -> None:
        client = redis.from_url(self._url, socket_connect_timeout=2, socket_timeout=5,
                                health_check_interval=5)
        if self._client is not None:
            await self._client.aclose()
        self._client = client
        if self.host:  # the old id must not go on counting this host's users
            with contextlib.suppress(RedisError, OSError):
                await client.delete(f"gogate:alive:{self.host}")
        self.host = secrets.token_hex(6)
        self._scripts = {name: client.register_script(source) for name, source in
                         (("online", scripts.ONLINE), ("revoke", _REVOKE))}
        await self.streams.bind(client, self.host, self._envelope, _open)
        await client.set(f"gogate:alive:{self.host}", 1, ex=_ALIVE_TTL)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"gogate:host:{self.host}", _BROADCAST)
        self.connected = True
        await self._resync(client)
        await self._sync_revocations(self._local.in_force())
        await self.streams.recover(self._local.totals().keys())
        server_log.info("routing between hosts through Redis as host %s", self.host)
        keepalive = asyncio.get_running_loop().create_task(self._keep_alive(client))
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if keepalive.done():
                    keepalive.result()  # raises what stopped it
                if message is not None:
                    self._arrived(message["data"])
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _arrived(self, data: bytes) -> None:
        """One message of this host's subscription, for its workers."""
        message: bus.Publish | bus.Invalidate | bus.Revoke
        try:
            if data[:1] == b"S":  # a numbered stream event, maybe this host's own
                origin, message, resets = read_stream_event(data)
                for user_id, epoch in resets:
                    self._local.reset(user_id, epoch, 0)
            elif data[:1] == b"R":
                for user_id, epoch, offset in read_resets(data):
                    self._local.reset(user_id, epoch, offset)
                return
            else:
                envelope = _decode(data)
                origin, message = envelope.origin, envelope.message
        except (msgspec.DecodeError, ValueError):
            server_log.warning("unreadable message from Redis ignored")
            return
        if origin != self.host:
            self._count("received")
            if isinstance(message, bus.Publish):
                message.done = None  # a ticket of another host's worker
            self._local.arrived(message)
        elif isinstance(message, bus.Publish) and message.offsets is not None:
            self._local.arrived(message)

    async def _keep_alive(self, client: redis.Redis) -> None:
        while True:
            await asyncio.sleep(_ALIVE_EVERY)
            await client.set(f"gogate:alive:{self.host}", 1, ex=_ALIVE_TTL)
            await self._resync(client)
            await self._sync_revocations(self._local.in_force())
            await self.streams.refresh(self._local.totals().keys())

    async def _resync(self, client: redis.Redis) -> None:
        """Make this host's entries in Redis equal its own counts: the authority is the
        host's presence table, so counts a race or an outage left wrong last 10 s at most."""
        index = f"gogate:hostusers:{self.host}"
        held = self._local.totals()
        registered = {int(member) for member in await client.smembers(index)}
        pipe = client.pipeline(transaction=False)
        for user_id in registered - held.keys():
            pipe.hdel(_user_key(user_id), self.host)
            pipe.srem(index, user_id)
        for user_id, count in held.items():
            pipe.hset(_user_key(user_id), self.host, count)
        if held:
            pipe.sadd(index, *held)
        pipe.expire(index, 3 * _ALIVE_TTL)
        await pipe.execute()

    def _count(self, outcome: str, events: int = 1) -> None:
        self._outcomes[outcome].inc(events)

    # --- what the host calls ------------------------------------------------------------------

    def _envelope(self, message: bus.Publish) -> bytes:
        return _encode(_Envelope(self.host, message))

    def publish(self, message: bus.Publish, stream: bool = False) -> bool:
        """Send an event to the other hosts holding one of its receivers, after every event
        published before it (one writer, pipelined), without waiting. A ``stream`` event is
        numbered and comes back to this host too. False: Redis cannot take it now; it is kept
        for the other hosts (unless droppable), and this host delivers it without offsets."""
        if (self.connected and self.streams.live) or self.streams.busy:
            self.streams.send(message, stream)  # in order after those still being written
            return True
        if message.droppable:
            self._count("unroutable")
        else:
            self.streams.hold(message, stream)
        return False

    async def _sync_revocations(self, records: list[tuple[int, float]]) -> None:
        """Add ``records`` to the revocations kept in Redis and learn all of them."""
        args: list[float | int] = [time.time() - MIN_HORIZON]
        for user_id, at in records:
            args += [user_id, at]
        kept = await self._scripts["revoke"](keys=[_REVOKED], args=args)
        self._local.learn([(int(kept[i]), float(kept[i + 1])) for i in range(0, len(kept), 2)])

    async def revoke(self, message: bus.Revoke) -> None:
        """Tell the other hosts that the user was revoked, and keep it for those that connect
        later; a host that missed both learns it from Redis within 10 s of reaching it."""
        await self.broadcast(message)
        if self.connected:
            with contextlib.suppress(RedisError, OSError):
                await self._sync_revocations([(message.user_id, message.at)])

    async def broadcast(self, message: bus.Invalidate | bus.Revoke) -> None:
        if not self.connected or self._client is None:
            self._count("unroutable")
            return
        try:
            await self._client.publish(_BROADCAST, _encode(_Envelope(self.host, message)))
        except (RedisError, OSError):
            self._count("unroutable")

    async def acquire(self, user_id: int, limit: int, since: tuple[str, int] | None = None
                      ) -> bus.Granted | None:
        """Count one more connection of the user across hosts and open its stream (with the
        events after ``since``); None when Redis cannot say."""
        return await self._ask_redis(lambda: self.streams.acquire(user_id, limit, since))

    async def replay(self, user_id: int, epoch: str, offset: int
                     ) -> list[tuple[int, bytes]] | None:
        return await self._ask_redis(lambda: self.streams.replay(user_id, epoch, offset))

    async def _ask_redis(self, ask: Callable[[], Awaitable[_Answer]]) -> _Answer | None:
        """The answer of one call to Redis; None when Redis is unreachable or fails."""
        if not self.connected:
            return None
        try:
            return await ask()
        except (RedisError, OSError):
            return None

    async def release_many(self, counts: dict[int, int]) -> None:
        """Connections gone (one, or a dead worker's all at once)."""
        if not self.connected:
            return
        with contextlib.suppress(RedisError, OSError):
            await self.streams.release(counts)

    async def release(self, user_id: int) -> None:
        await self.release_many({user_id: 1})

    async def online(self, user_ids: list[int]) -> set[int] | None:
        if not self.connected or not user_ids:
            return None
        try:
            flags = await self._scripts["online"](keys=[_user_key(u) for u in user_ids])
        except (RedisError, OSError):
            return None
        return {user_id for user_id, flag in zip(user_ids, flags, strict=True) if flag}
