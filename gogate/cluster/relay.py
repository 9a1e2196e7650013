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
- **Outages.** While Redis is unreachable, each host keeps delivering to its own workers,
  counts what it could not route, and retries with backoff. On reconnecting it takes a fresh
  host id and registers the users it holds again. The old id's entries die with its alive
  key, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any, Final, Protocol

import msgspec
import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from gogate.cluster import bus
from gogate.log import server_log

__all__ = ["Local", "RedisRelay"]

_ALIVE_TTL: Final = 30
_ALIVE_EVERY: Final = 10.0
_BROADCAST: Final = "gogate:all"
_OUTBOX_LIMIT: Final = 10_000  # events waiting for Redis; beyond it they count as unroutable

# KEYS: user hashes; ARGV: origin host, message. Publishes once per live target host.
_ROUTE = """
local hosts = {}
for _, key in ipairs(KEYS) do
  local fields = redis.call('HKEYS', key)
  for _, host in ipairs(fields) do hosts[host] = true end
end
local sent = 0
for host, _ in pairs(hosts) do
  if host ~= ARGV[1] and redis.call('EXISTS', 'gogate:alive:' .. host) == 1 then
    redis.call('PUBLISH', 'gogate:host:' .. host, ARGV[2])
    sent = sent + 1
  end
end
return sent
"""

# KEYS[1]: user hash; ARGV: host, limit. Counts one more connection unless at the limit.
_ACQUIRE = """
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if redis.call('EXISTS', 'gogate:alive:' .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
local limit = tonumber(ARGV[2])
if limit > 0 and total >= limit then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""

# KEYS[1]: user hash; ARGV[1]: host. Counts one connection less.
_RELEASE = """
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left
"""

# KEYS: user hashes. Returns 1/0 per key: does a live host hold the user?
_ONLINE = """
local result = {}
for i, key in ipairs(KEYS) do
  result[i] = 0
  for _, host in ipairs(redis.call('HKEYS', key)) do
    if redis.call('EXISTS', 'gogate:alive:' .. host) == 1 then result[i] = 1 break end
  end
end
return result
"""


class _Envelope(msgspec.Struct, array_like=True):
    origin: str
    message: bus.Publish | bus.Invalidate


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Envelope).decode


def _user_key(user_id: int) -> str:
    return f"gogate:user:{user_id}"


class Local(Protocol):
    """What the relay needs of this host."""

    def arrived(self, message: bus.Publish | bus.Invalidate) -> None:
        """An event or an invalidation from another host, for this host's workers."""

    def totals(self) -> dict[int, int]:
        """User id → connections on this host, for every user it holds."""


class RedisRelay:
    """This host's link to the others. ``events`` counts, by outcome, the events it carries."""

    def __init__(self, url: str, local: Local, events: Counter) -> None:
        self._url = url
        self._local = local
        self._outcomes = {outcome: events.labels(outcome)
                          for outcome in ("published", "received", "unroutable")}
        self.host = ""
        self.connected = False
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: list[bus.Publish] = []
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
            self.connected = False
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
                         (("route", _ROUTE), ("acquire", _ACQUIRE), ("release", _RELEASE),
                          ("online", _ONLINE))}
        await client.set(f"gogate:alive:{self.host}", 1, ex=_ALIVE_TTL)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"gogate:host:{self.host}", _BROADCAST)
        self.connected = True
        await self._resync(client)
        server_log.info("routing between hosts through Redis as host %s", self.host)
        keepalive = asyncio.get_running_loop().create_task(self._keep_alive(client))
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if keepalive.done():
                    keepalive.result()  # raises what stopped it
                if message is None:
                    continue
                try:
                    envelope = _decode(message["data"])
                except msgspec.DecodeError:
                    server_log.warning("unreadable message from Redis ignored")
                    continue
                if envelope.origin != self.host:
                    self._count("received")
                    self._local.arrived(envelope.message)
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _keep_alive(self, client: redis.Redis) -> None:
        while True:
            await asyncio.sleep(_ALIVE_EVERY)
            await client.set(f"gogate:alive:{self.host}", 1, ex=_ALIVE_TTL)
            await self._resync(client)

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

    def publish(self, message: bus.Publish) -> None:
        """Send an event to the other hosts holding one of its receivers, after every event
        published before it (one writer, pipelined), without waiting."""
        if not self.connected or len(self._outbox) >= _OUTBOX_LIMIT:
            self._count("unroutable")
            return
        self._outbox.append(message)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._outbox and self.connected and self._client is not None:
            batch = list(self._outbox)
            self._outbox.clear()
            pipe = self._client.pipeline(transaction=False)
            for message in batch:
                keys = [_user_key(user_id) for user_id in message.user_ids]
                await self._scripts["route"](keys=keys, client=pipe, args=[
                    self.host, _encode(_Envelope(self.host, message))])
            try:
                await pipe.execute()
                self._count("published", len(batch))
            except (RedisError, OSError):
                self._count("unroutable", len(batch))
        if self._outbox:
            self._count("unroutable", len(self._outbox))
        self._outbox.clear()

    async def broadcast(self, message: bus.Invalidate) -> None:
        if not self.connected or self._client is None:
            self._count("unroutable")
            return
        try:
            await self._client.publish(_BROADCAST, _encode(_Envelope(self.host, message)))
        except (RedisError, OSError):
            self._count("unroutable")

    async def acquire(self, user_id: int, limit: int) -> bool | None:
        """Count one more connection of the user across hosts; None when Redis cannot say."""
        if not self.connected:
            return None
        try:
            return bool(await self._scripts["acquire"](keys=[_user_key(user_id)],
                                                       args=[self.host, limit]))
        except (RedisError, OSError):
            return None

    async def release_many(self, counts: dict[int, int]) -> None:
        """A worker died: its users' connections are gone at once."""
        if not self.connected or self._client is None:
            return
        pipe = self._client.pipeline(transaction=False)
        for user_id, count in counts.items():
            pipe.hincrby(_user_key(user_id), self.host, -count)
        with contextlib.suppress(RedisError, OSError):
            await pipe.execute()

    async def release(self, user_id: int) -> None:
        if not self.connected:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._scripts["release"](keys=[_user_key(user_id)], args=[self.host])

    async def online(self, user_ids: list[int]) -> set[int] | None:
        if not self.connected or not user_ids:
            return None
        try:
            flags = await self._scripts["online"](keys=[_user_key(u) for u in user_ids])
        except (RedisError, OSError):
            return None
        return {user_id for user_id, flag in zip(user_ids, flags, strict=True) if flag}
