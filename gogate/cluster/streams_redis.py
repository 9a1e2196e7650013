"""Users' streams kept in Redis, for a deployment of several hosts (``REDIS_URL``), and what a
host owes the others while Redis is unreachable.

Every stream event goes through Redis once: one script (:data:`.scripts.APPEND`) gives it the
next offset of each receiver's stream, stores it once, and publishes it with the offsets to
every host holding a receiver, its origin included. Each host delivers stream events from its
one subscription, in the order Redis ran the scripts, so every device of a user sees the same
offsets in increasing order, on any host. The position of a stream and the events a resuming
client missed are read by the script that counts the connection
(:data:`.scripts.ACQUIRE`), so a resume costs one command.

While Redis is unreachable a host goes on delivering to its own connections, without offsets,
and keeps the events other hosts are owed in an :class:`Outbox` (at most 10,000 events, none
older than 60 s). Once Redis is back, before any event is numbered again, it delivers them and
gives every user who received events meanwhile, or whose events were lost, a stream in a new
epoch; their hosts send each of their connections ``stream_reset``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Final, cast

import msgspec
import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from gogate.cluster import bus, scripts
from gogate.cluster.outbox import OUTBOX_AGE, OUTBOX_SIZE, Outbox

__all__ = ["RedisStreams", "read_resets", "read_stream_event", "receivers"]

_LEASE: Final = 60  # seconds beyond RECOVERY_TTL a held user's stream is kept between renewals
_CHUNK: Final = 1000  # users per script call

_LENGTH: Final = struct.Struct(">I")
_read_head = msgspec.msgpack.Decoder(
    tuple[str, str, list[int], list[int], list[tuple[int, str]], tuple[int, int]]).decode
_read_resets = msgspec.msgpack.Decoder(list[tuple[int, str, int]]).decode
_read_late = msgspec.msgpack.Decoder(tuple[float, list[str]]).decode

Opener = Callable[[bytes], tuple[str, "bus.Publish | bus.Invalidate | bus.Revoke"]]
"""Decodes an envelope: the origin host and its message."""


def read_stream_event(data: bytes) -> tuple[str, bus.Publish, list[tuple[int, str]]]:
    """A numbered stream event as :data:`.scripts.APPEND` published it: its origin host, the
    event with its receivers' offsets, and the (user, epoch) whose stream it started anew."""
    if len(data) < 5:
        raise ValueError("a stream event without its head")
    (size,) = _LENGTH.unpack_from(data, 1)
    origin, event, users, offsets, resets, done = _read_head(memoryview(data)[5:5 + size])
    return origin, bus.Publish(users, event, data[5 + size:], offsets=offsets,
                               done=done if done[1] else None), resets


def read_resets(data: bytes) -> list[tuple[int, str, int]]:
    """Replaced streams, as (user, epoch, offset)."""
    return _read_resets(memoryview(data)[1:])


def _user_key(user_id: int) -> str:
    return f"gogate:user:{user_id}"


def _chunks(users: Iterable[int]) -> Iterator[list[int]]:
    it = iter(users)
    while chunk := list(itertools.islice(it, _CHUNK)):
        yield chunk


def receivers(message: bus.Publish) -> list[int]:
    """The users a stream event is numbered for."""
    excluded = message.exclude_user
    return message.user_ids if excluded is None else [
        user_id for user_id in message.user_ids if user_id != excluded]


class RedisStreams:
    """The streams of the deployment in Redis, and the events this host sends through it:
    ``ttl`` and ``size`` are ``RECOVERY_TTL`` (0: events are not numbered) and
    ``RECOVERY_SIZE``; ``events`` counts events by outcome (published, unroutable), ``resets``
    the streams this host replaced; ``deliver_here`` takes a stream event that this host must
    deliver itself, without offsets."""

    def __init__(self, ttl: float, size: int, events: Counter, resets: Counter,
                 deliver_here: Callable[[bus.Publish], None]) -> None:
        self.on = ttl > 0
        self._ttl = max(1, math.ceil(ttl))
        self._lease = self._ttl + _LEASE
        self._size = size
        self._published = events.labels("published")
        self._unroutable = events.labels("unroutable")
        self._resets = resets
        self._deliver_here = deliver_here
        self.live = False  # stream events are numbered in Redis (else kept for later)
        self.outbox = Outbox()
        self.affected: set[int] = set()  # users who received events Redis did not number
        self._seed = secrets.token_urlsafe(6)
        self._epochs = itertools.count(1)
        self._scripts: dict[str, Any] = {}
        self._client: redis.Redis | None = None
        self._host = ""
        self._ids: deque[tuple[float, str]] = deque()  # this host's ids, lately
        self._envelope: Callable[[bus.Publish], bytes] = bus.encode
        self._open: Opener | None = None
        self._pending: list[tuple[bus.Publish, bool]] = []  # for the writer, in order
        self._writer: asyncio.Task[None] | None = None

    async def bind(self, client: redis.Redis, host: str,
                   envelope: Callable[[bus.Publish], bytes], opener: Opener) -> None:
        """Use ``client`` as host ``host`` (a new session) from now on; ``envelope`` encodes an
        event routed without offsets, ``opener`` decodes one. The scripts are loaded now, so
        that a pipeline of them costs one round trip."""
        self.live = False
        self._client = client
        self._host = host
        now = time.time()
        while self._ids and self._ids[0][0] < now - 2 * OUTBOX_AGE:
            self._ids.popleft()
        self._ids.append((now, host))
        self._envelope = envelope
        self._open = opener
        self._scripts = {name: client.register_script(source) for name, source in (
            ("route", scripts.ROUTE), ("acquire", scripts.ACQUIRE), ("append", scripts.APPEND),
            ("release", scripts.RELEASE), ("replay", scripts.REPLAY), ("reset", scripts.RESET),
            ("refresh", scripts.REFRESH), ("flush", scripts.FLUSH))}
        for script in self._scripts.values():
            await client.script_load(script.script)

    def _queue(self, pipe: Any, name: str, args: list[Any], keys: Collection[str] = ()) -> None:
        """Queue one script on a pipeline by its digest."""
        pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)

    def _epoch(self) -> str:
        """An epoch never given before: random per host, then counted."""
        return f"{self._seed}{next(self._epochs)}"

    # --- while Redis is unreachable -----------------------------------------------------------

    def hold(self, message: bus.Publish, stream: bool) -> None:
        """An event Redis cannot carry now: keep it for the other hosts; its receivers' streams
        miss it, so they will start anew."""
        if stream and self.on:
            self.affected.update(receivers(message))
        dropped = self.outbox.add(message)
        if dropped:
            self._unroutable.inc(dropped)

    def outage_grant(self, user_id: int, since: tuple[str, int] | None) -> bus.Granted:
        """A connection counted by this host alone: its events are not numbered now, and it
        learns its stream's position with ``stream_reset`` once Redis is back."""
        if self.on:
            self.affected.add(user_id)
        return bus.Granted(0, True, None, 0, None if since is None else False)

    async def recover(self, held: Collection[int]) -> None:
        """Redis is back (or reached for the first time), and this host holds the users
        ``held``. Deliver here what other hosts kept for it while it was away; deliver what
        the other hosts are owed (without offsets, as it was delivered here); then start anew
        the stream of every user who received events meanwhile and of every user held here
        (events for them may have been published while this host was not listening), on the
        same connection, so that every host sees the events before the new stream. Repeat
        until nothing is left, then number stream events again."""
        assert self._client is not None
        if self._writer is not None:  # what the last session left is kept or delivered first
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._deliver_late(self._client)
        if self.on:
            self.affected.update(held)
        while True:
            events, dropped = self.outbox.take()
            if dropped:
                self._unroutable.inc(dropped)
            users, self.affected = self.affected, set()
            if not events and not users:
                break
            pipe = self._client.pipeline(transaction=False)
            for message in events:
                keys = [_user_key(user_id) for user_id in message.user_ids]
                self._queue(pipe, "flush", [self._host, self._envelope(message), time.time(),
                                            OUTBOX_SIZE], keys)
            for chunk in _chunks(users):
                self._queue(pipe, "reset", [self._epoch(), self._lease, *chunk])
            try:
                await pipe.execute()
            except BaseException:
                self.outbox.give_back(events)
                self.affected |= users
                raise
            self._published.inc(len(events))
            self._resets.inc(len(users))
        self.live = True

    async def _deliver_late(self, client: redis.Redis) -> None:
        """The events other hosts delivered from their outboxes while this host was away (not
        to one of its ids), younger than the outbox keeps them."""
        assert self._open is not None
        horizon = time.time() - OUTBOX_AGE
        mine = {host for _, host in self._ids}
        pending = client.lrange(scripts.LATE, 0, -1)
        entries = cast("list[bytes]", await pending)  # type: ignore[misc]
        for entry in entries:
            try:
                (size,) = _LENGTH.unpack_from(entry, 0)
                at, reached = _read_late(memoryview(entry)[4:4 + size])
                if at < horizon or not mine.isdisjoint(reached):
                    continue
                origin, message = self._open(entry[4 + size:])
            except (msgspec.DecodeError, struct.error):
                continue
            if origin not in mine and isinstance(message, bus.Publish):
                message.done = None  # a ticket of another host's worker
                self._deliver_here(message)

    # --- with Redis ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Events wait for the writer: a later one must follow them, whatever becomes of
        them."""
        return self._writer is not None and not self._writer.done()

    def send(self, message: bus.Publish, stream: bool) -> None:
        """Send one event through Redis after every event sent before it (one writer,
        pipelined), without waiting: a ``stream`` event numbered, to every host holding a
        receiver; another routed to the other hosts holding one."""
        self._pending.append((message, stream))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._pending:
            batch = list(self._pending)
            self._pending.clear()
            try:
                if self._client is None or not self.live:
                    raise ConnectionError("Redis is unreachable")
                pipe = self._client.pipeline(transaction=False)
                for message, stream in batch:
                    if stream:
                        self._queue(pipe, "append", [
                            self._host, self._epoch(), self._lease, self._ttl, self._size,
                            message.event, message.payload, *(message.done or (0, 0)),
                            *receivers(message)])
                    else:
                        self._route(pipe, message)
                await pipe.execute()
                self._published.inc(len(batch))
            except (RedisError, OSError):
                self._undelivered(batch)

    def _undelivered(self, batch: list[tuple[bus.Publish, bool]]) -> None:
        """Events Redis may not have taken: kept for the other hosts; stream events, which
        this host has not delivered yet, are delivered here without offsets."""
        for message, stream in batch:
            if message.droppable:
                self._unroutable.inc()
                continue
            self.hold(message, stream)
            if stream:
                self._deliver_here(message)

    def _route(self, pipe: Any, message: bus.Publish) -> None:
        """Queue on ``pipe`` the script that routes an event to the other hosts holding one of
        its receivers, without numbering it."""
        keys = [_user_key(user_id) for user_id in message.user_ids]
        self._queue(pipe, "route", [self._host, self._envelope(message)], keys)

    async def acquire(self, user_id: int, limit: int,
                      since: tuple[str, int] | None) -> bus.Granted:
        """Count one more connection of the user across hosts and open the user's stream, with
        the events after ``since`` when they can all be given: one command."""
        epoch, offset = since if since is not None else ("", 0)
        answer = await self._scripts["acquire"](args=[
            self._host, user_id, limit, int(self.on), self._epoch(), self._lease, epoch, offset,
            self._size])
        if not answer[0]:
            return bus.Granted(0, False)
        if not self.on:
            return bus.Granted(0, True, None, 0, None if since is None else False)
        latest = int(answer[2])
        recovered = None if answer[3] < 0 else bool(answer[3])
        events = [(offset + 1 + i, payload) for i, payload in enumerate(answer[4:])]
        return bus.Granted(0, True, answer[1].decode(), latest, recovered, events)

    async def replay(self, user_id: int, epoch: str, offset: int
                     ) -> list[tuple[int, bytes]] | None:
        answer = await self._scripts["replay"](args=[user_id, epoch, offset, self._size])
        if not answer[0]:
            return None
        return [(offset + 1 + i, payload) for i, payload in enumerate(answer[1:])]

    async def release(self, counts: dict[int, int]) -> None:
        """Count connections less; streams whose user holds none anywhere expire after
        ``RECOVERY_TTL``."""
        for chunk in _chunks(counts):
            args: list[int | str] = [self._host, int(self.on), self._ttl]
            for user_id in chunk:
                args += [user_id, counts[user_id]]
            await self._scripts["release"](args=args)

    async def refresh(self, users: Collection[int]) -> None:
        """Keep the streams of the users this host holds."""
        if not self.on or not users or self._client is None:
            return
        pipe = self._client.pipeline(transaction=False)
        for chunk in _chunks(users):
            self._queue(pipe, "refresh", [self._lease, *chunk])
        await pipe.execute()
