"""The member cache: fetched once however many ask, reused for its TTL, stale for a while when
the backend fails, retried when a caller must deliver, and forgotten on invalidation."""

from __future__ import annotations

import asyncio
import time

import pytest

from gogate.errors import BackendUnavailable, ClientError, ErrorCode
from gogate.members import MembersCache


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Backend:
    """A stand-in for the backend's member-list call: counts calls, can fail or block."""

    def __init__(self, members: frozenset[int] = frozenset({1, 2})) -> None:
        self.members = members
        self.calls = 0
        self.failures = 0  # the next N calls fail
        self.fail_always = False
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, chat_id: int) -> frozenset[int]:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_always or self.failures > 0:
            self.failures -= 1
            raise BackendUnavailable("Backend unavailable")
        return self.members


async def test_fresh_hit_makes_no_fetch() -> None:
    backend, clock = Backend(), Clock()
    cache = MembersCache(backend, ttl=5, clock=clock)
    assert await cache.get(1) == frozenset({1, 2})
    clock.now += 4.9
    assert await cache.get(1) == frozenset({1, 2})
    assert cache.fresh(1) == frozenset({1, 2})
    assert backend.calls == 1


async def test_chats_are_cached_separately() -> None:
    backend = Backend()
    cache = MembersCache(backend, ttl=5, clock=Clock())
    await cache.get(1)
    await cache.get(2)
    await cache.get(1)
    assert backend.calls == 2


async def test_concurrent_gets_share_one_fetch() -> None:
    backend = Backend()
    backend.delay = 0.02
    cache = MembersCache(backend, ttl=5, clock=Clock())
    results = await asyncio.gather(*(cache.get(1) for _ in range(50)))
    assert backend.calls == 1
    assert all(r == frozenset({1, 2}) for r in results)


async def test_concurrent_gets_share_one_failure() -> None:
    backend = Backend()
    backend.delay = 0.02
    backend.fail_always = True
    cache = MembersCache(backend, ttl=5, clock=Clock())
    results = await asyncio.gather(*(cache.get(1) for _ in range(20)), return_exceptions=True)
    assert backend.calls == 1
    assert all(isinstance(r, BackendUnavailable) for r in results)


async def test_ttl_expiry_refetches() -> None:
    backend, clock = Backend(), Clock()
    cache = MembersCache(backend, ttl=5, clock=clock)
    await cache.get(1)
    clock.now += 5.0
    assert cache.fresh(1) is None
    backend.members = frozenset({1, 2, 3})
    assert await cache.get(1) == frozenset({1, 2, 3})
    assert backend.calls == 2


async def test_ttl_zero_fetches_every_time() -> None:
    backend = Backend()
    cache = MembersCache(backend, ttl=0, clock=Clock())
    for _ in range(3):
        await cache.get(1)
    assert backend.calls == 3


async def test_failure_serves_stale_list_up_to_60s() -> None:
    backend, clock = Backend(), Clock()
    cache = MembersCache(backend, ttl=5, clock=clock)
    await cache.get(1)
    backend.fail_always = True
    clock.now += 30
    assert await cache.get(1) == frozenset({1, 2})
    clock.now += 30  # 60 s old: still served
    assert await cache.get(1) == frozenset({1, 2})
    clock.now += 0.5  # older than 60 s: not any more
    with pytest.raises(BackendUnavailable):
        await cache.get(1)


async def test_failure_without_entry_raises() -> None:
    backend = Backend()
    backend.fail_always = True
    cache = MembersCache(backend, ttl=5, clock=Clock())
    with pytest.raises(BackendUnavailable):
        await cache.get(1)
    assert len(cache) == 0


async def test_invalid_chat_is_not_retried_nor_cached() -> None:
    calls = 0

    async def fetch(chat_id: int) -> frozenset[int]:
        nonlocal calls
        calls += 1
        raise ClientError("Chat not found", ErrorCode.INVALID_CHAT)

    cache = MembersCache(fetch, ttl=5, retry_for=5, clock=Clock())
    with pytest.raises(ClientError) as info:
        await cache.get(9, patient=True)
    assert info.value.code is ErrorCode.INVALID_CHAT
    assert calls == 1


async def test_patient_get_retries_until_success() -> None:
    backend = Backend()
    backend.failures = 2
    cache = MembersCache(backend, ttl=5, retry_for=3.0)
    started = time.monotonic()
    assert await cache.get(1, patient=True) == frozenset({1, 2})
    assert backend.calls == 3
    assert time.monotonic() - started < 2.5
    assert cache.fresh(1) == frozenset({1, 2})


async def test_patient_get_gives_up_after_retry_for() -> None:
    backend = Backend()
    backend.fail_always = True
    cache = MembersCache(backend, ttl=5, retry_for=0.4)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await cache.get(1, patient=True)
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 1.5
    assert backend.calls >= 2


async def test_invalidate_forces_refetch() -> None:
    backend = Backend()
    cache = MembersCache(backend, ttl=60, clock=Clock())
    await cache.get(1)
    cache.invalidate(1)
    assert cache.fresh(1) is None
    backend.members = frozenset({1})
    assert await cache.get(1) == frozenset({1})
    assert backend.calls == 2


async def test_fetch_in_flight_at_invalidation_does_not_repopulate() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    cache = MembersCache(backend, ttl=60, clock=Clock())
    first = asyncio.create_task(cache.get(1))
    await asyncio.wait_for(backend.started.wait(), 1)
    cache.invalidate(1)
    backend.gate.set()
    assert await first == frozenset({1, 2})  # its caller still gets an answer
    assert cache.fresh(1) is None
    backend.members = frozenset({1, 2, 3})
    assert await cache.get(1) == frozenset({1, 2, 3})
    assert backend.calls == 2


async def test_get_after_invalidation_does_not_join_the_old_fetch() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    cache = MembersCache(backend, ttl=60, clock=Clock())
    first = asyncio.create_task(cache.get(1))
    await asyncio.wait_for(backend.started.wait(), 1)
    cache.invalidate(1)
    second = asyncio.create_task(cache.get(1))
    await asyncio.sleep(0)
    backend.gate.set()
    await asyncio.gather(first, second)
    assert backend.calls == 2
    assert cache.fresh(1) == frozenset({1, 2})
