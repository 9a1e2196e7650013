"""Reuse of token validations: a bounded, expiring map from a token's hash to the user the
token was found to belong to (by the backend, or by a local signature check), with one backend
call per token at a time.

Why: after a deploy or a network blip every client reconnects at once with the token it
already had; without reuse each of them costs a backend round trip (or an RSA verification).
What is kept and when:

- the key is the SHA-256 digest of the token; the token itself is never kept;
- an entry lives ``ttl`` seconds, and never past the token's ``exp``;
- at most ``max_entries`` entries; the least recently used one goes first;
- only acceptances are kept: a refusal (or a failed call) is asked again next time;
- concurrent lookups of a token that is not kept share one backend call (single flight), also
  with ``ttl`` 0, which keeps nothing;
- :meth:`forget` drops one token (the backend answered 401 to a call made with it),
  :meth:`forget_user` every token of a user (the user was revoked). A call in flight while
  either happens still answers its callers, but its result is not kept, and the callers are
  told it may be stale.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Final

from gogate.models import User

__all__ = ["DEFAULT_MAX_ENTRIES", "ValidationCache", "token_digest"]

# About 200 bytes each: 100,000 entries hold one reconnect storm of a large worker in ~20 MB.
DEFAULT_MAX_ENTRIES: Final = 100_000

Hook = Callable[[], None]


def token_digest(token: str) -> bytes:
    """The key a token is kept under."""
    return hashlib.sha256(token.encode()).digest()


def _nothing() -> None:
    pass


class _Entry:
    __slots__ = ("until", "user")

    def __init__(self, user: User, until: float) -> None:
        self.user = user
        self.until = until


class _Flight:
    """One backend call in progress, and whether its result may still be kept."""

    __slots__ = ("keep", "task")

    def __init__(self, task: asyncio.Task[User]) -> None:
        self.task = task
        self.keep = True


class ValidationCache:
    """Validated tokens of one worker. ``clock`` is wall-clock time, like ``exp``."""

    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES, *,
                 clock: Callable[[], float] = time.time,
                 on_hit: Hook | None = None, on_miss: Hook | None = None) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("the validation cache needs ttl >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._on_hit = on_hit or _nothing
        self._on_miss = on_miss or _nothing
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_user: dict[int, set[bytes]] = {}
        self._flights: dict[bytes, _Flight] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: bytes, expires_at: float | None,
                  load: Callable[[], Coroutine[Any, Any, User]]) -> tuple[User, bool]:
        """The user of the token hashed to ``key``, and whether that answer is current: False
        when the token or its user was forgotten while the backend call was in flight, so the
        answer may predate a revocation. ``load`` asks the backend; ``expires_at`` is the
        token's ``exp`` when it has one."""
        user = self.lookup(key)
        if user is not None:
            self._on_hit()
            return user, True
        flight = self._flights.get(key)
        if flight is not None:
            self._on_hit()
        else:
            self._on_miss()
            flight = _Flight(asyncio.get_running_loop().create_task(load()))
            self._flights[key] = flight
            flight.task.add_done_callback(partial(self._landed, key, expires_at, flight))
        # The call goes on when this caller goes away: others may be waiting for it.
        user = await asyncio.shield(flight.task)
        return user, flight.keep

    def lookup(self, key: bytes) -> User | None:
        """The user kept for the token hashed to ``key``, or None; no backend call."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.user

    def _landed(self, key: bytes, expires_at: float | None, flight: _Flight,
                _task: asyncio.Task[User]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.cancelled() or flight.task.exception() is not None:
            return  # a refusal or a failed call is never kept
        if flight.keep:
            self.keep(key, flight.task.result(), expires_at)

    def keep(self, key: bytes, user: User, expires_at: float | None) -> None:
        """Keep the user of an accepted token for ``ttl`` seconds, never past ``expires_at``."""
        if self.ttl <= 0:
            return
        until = self._clock() + self.ttl
        if expires_at is not None:
            until = min(until, expires_at)
        if until <= self._clock():
            return
        self._drop(key)
        self._entries[key] = _Entry(user, until)
        self._by_user.setdefault(user.id, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def prune(self) -> int:
        """Drop every expired entry; the number dropped. The worker calls it every few
        seconds, so that tokens nobody presents again do not wait for newer ones to push them
        out (a whole pass: entries are kept in order of use, not of expiry)."""
        now = self._clock()
        expired = [key for key, entry in self._entries.items() if entry.until <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    def _drop(self, key: bytes) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        keys = self._by_user.get(entry.user.id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[entry.user.id]
        return True

    def forget(self, key: bytes) -> bool:
        """Drop the token hashed to ``key``; True when an entry was kept for it."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.keep = False
        return self._drop(key)

    def forget_user(self, user_id: int) -> int:
        """Drop every token of the user; the number of entries dropped."""
        for flight in self._flights.values():
            flight.keep = False  # whose token each call validates is not known yet
        keys = self._by_user.pop(user_id, set())
        for key in keys:
            self._entries.pop(key, None)
        return len(keys)
