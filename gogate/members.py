"""Chat member lists, cached per chat, fetched once however many broadcasts ask at a time.

A list is reused for ``MEMBERS_CACHE_TTL`` seconds and dropped on invalidation. When a fetch
fails, the last list known for the chat serves for up to 60 seconds; a caller that must deliver
(a message the backend accepted) retries with backoff for up to 30 seconds more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gogate.errors import BackendUnavailable
from gogate.metrics import Metrics

__all__ = ["MembersCache"]

Fetch = Callable[[int], Coroutine[Any, Any, frozenset[int]]]
"""The backend's member list of a chat (:meth:`gogate.backend.BackendClient.chat_members`)."""


class MembersCache:
    """Member lists by chat id, with single-flight fetches and a stale fallback."""

    def __init__(self, fetch: Fetch, ttl: float, *, stale_for: float = 60.0,
                 retry_for: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 metrics: Metrics | None = None) -> None:
        self._fetch = fetch
        self._entries: dict[int, tuple[frozenset[int], float]] = {}
        self._inflight: dict[int, asyncio.Task[frozenset[int]]] = {}
        self.ttl = ttl
        self.stale_for = stale_for
        self.retry_for = retry_for
        self._clock = clock
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, chat_id: int) -> frozenset[int] | None:
        """The cached list when it is younger than the TTL, without waiting."""
        entry = self._entries.get(chat_id)
        if entry is not None and self._clock() - entry[1] < self.ttl:
            return entry[0]
        return None

    async def get(self, chat_id: int, *, patient: bool = False) -> frozenset[int]:
        """The chat's member ids. Raises ``BackendUnavailable`` when no list can be had (after
        retrying for ``retry_for`` seconds when ``patient``), or the backend's INVALID_CHAT."""
        members = self.fresh(chat_id)
        if members is not None:
            return members
        try:
            return await self._fetch_shared(chat_id)
        except BackendUnavailable:
            entry = self._entries.get(chat_id)
            if entry is not None and self._clock() - entry[1] <= self.stale_for:
                return entry[0]
            if not patient:
                raise
        deadline = self._clock() + self.retry_for
        delay = 0.25
        while True:
            await asyncio.sleep(min(delay, max(0.0, deadline - self._clock())))
            delay = min(delay * 2, 5.0)
            try:
                return await self._fetch_shared(chat_id)
            except BackendUnavailable:
                if self._clock() >= deadline:
                    raise

    def invalidate(self, chat_id: int) -> None:
        """Forget the chat's list; a fetch already under way no longer fills the cache."""
        self._entries.pop(chat_id, None)
        self._inflight.pop(chat_id, None)

    def prune(self) -> None:
        """Drop lists too old to serve even as a fallback."""
        horizon = self._clock() - max(self.ttl, self.stale_for)
        stale = [chat for chat, (_, at) in self._entries.items() if at < horizon]
        for chat in stale:
            del self._entries[chat]

    async def _fetch_shared(self, chat_id: int) -> frozenset[int]:
        task = self._inflight.get(chat_id)
        if task is None:
            if self._metrics is not None:
                self._metrics.member_fetches.inc()
            task = asyncio.get_running_loop().create_task(self._fetch(chat_id))
            self._inflight[chat_id] = task
            task.add_done_callback(lambda t: self._settle(chat_id, t))
        return await asyncio.shield(task)

    def _settle(self, chat_id: int, task: asyncio.Task[frozenset[int]]) -> None:
        if self._inflight.get(chat_id) is not task:
            if not task.cancelled():
                task.exception()  # invalidated meanwhile: its answer is not kept
            return
        del self._inflight[chat_id]
        if not task.cancelled() and task.exception() is None:
            self._entries[chat_id] = (task.result(), self._clock())
