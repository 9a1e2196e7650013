"""Reuse of backend validations through the Authenticator: one backend call per token while
it is kept, one call for concurrent lookups, refusals asked again, lifetime capped by ``exp``,
bounded size, and forgetting a token on a 401."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from gogate.auth import Authenticator, ValidationCache, token_digest
from gogate.errors import AuthFailed, BackendUnavailable
from gogate.models import User

NOW = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Backend:
    """Stands in for the backend's auth/validate: each token names a user, counts its calls,
    and may be held at a gate, refused or failing."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.gate: asyncio.Event | None = None
        self.refused: set[str] = set()
        self.failing = False

    def count(self, token: str | None = None) -> int:
        return sum(self.calls.values()) if token is None else self.calls.get(token, 0)

    async def validate(self, token: str) -> User:
        self.calls[token] = self.calls.get(token, 0) + 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise BackendUnavailable("Backend unavailable")
        if token in self.refused:
            raise AuthFailed("Authentication failed: invalid token")
        user_id = int(token.rsplit("-", 1)[-1]) if token[-1].isdigit() else 1
        return User(user_id, f"user {user_id}", None)


def jwt_like(user_id: int, *, exp: float | None = None, iat: float | None = None) -> str:
    """An unsigned JWT: the backend verifies it; the gateway only reads iat/exp from it."""
    claims = {k: v for k, v in {"user_id": user_id, "exp": exp, "iat": iat}.items() if v}

    def b64(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.sig-{user_id}"


class Counts:
    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0

    def hit(self) -> None:
        self.hits += 1

    def miss(self) -> None:
        self.misses += 1


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def counts() -> Counts:
    return Counts()


@pytest.fixture
def auth(backend: Backend, clock: Clock, counts: Counts) -> Authenticator:
    return Authenticator(backend.validate, cache_ttl=60, clock=clock, on_cache_hit=counts.hit,
                         on_cache_miss=counts.miss)


async def test_a_kept_validation_makes_no_backend_call(auth: Authenticator, backend: Backend,
                                                       counts: Counts) -> None:
    assert await auth.authenticate("token-1") == (User(1, "user 1", None), None)
    assert await auth.authenticate("token-1") == (User(1, "user 1", None), None)
    assert backend.count() == 1
    assert (counts.hits, counts.misses) == (1, 1)


async def test_the_expiry_is_the_tokens_exp(auth: Authenticator, backend: Backend) -> None:
    token = jwt_like(3, exp=NOW + 600, iat=NOW - 10)
    assert await auth.authenticate(token) == (User(3, "user 3", None), NOW + 600)
    assert await auth.authenticate(token) == (User(3, "user 3", None), NOW + 600)
    assert backend.count() == 1


async def test_single_flight(auth: Authenticator, backend: Backend, counts: Counts) -> None:
    backend.gate = asyncio.Event()
    waiting = [asyncio.create_task(auth.authenticate("token-2")) for _ in range(50)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    results = await asyncio.gather(*waiting)
    assert {user for user, _ in results} == {User(2, "user 2", None)}
    assert backend.count() == 1
    assert (counts.hits, counts.misses) == (49, 1)


async def test_the_call_goes_on_when_its_first_caller_leaves(auth: Authenticator,
                                                              backend: Backend) -> None:
    backend.gate = asyncio.Event()
    first = asyncio.create_task(auth.authenticate("token-4"))
    await asyncio.sleep(0)
    second = asyncio.create_task(auth.authenticate("token-4"))
    await asyncio.sleep(0.01)
    first.cancel()
    backend.gate.set()
    assert (await second)[0].id == 4
    assert await auth.authenticate("token-4") == (User(4, "user 4", None), None)
    assert backend.count() == 1


async def test_refusals_are_not_kept(auth: Authenticator, backend: Backend) -> None:
    backend.refused.add("token-5")
    for _ in range(2):
        with pytest.raises(AuthFailed, match="invalid token"):
            await auth.authenticate("token-5")
    assert backend.count() == 2
    backend.refused.clear()
    assert (await auth.authenticate("token-5"))[0].id == 5
    assert backend.count() == 3


async def test_concurrent_refusals_share_a_call_and_are_not_kept(auth: Authenticator,
                                                                 backend: Backend) -> None:
    backend.refused.add("token-5")
    backend.gate = asyncio.Event()
    waiting = [asyncio.create_task(auth.authenticate("token-5")) for _ in range(10)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, AuthFailed) for r in results)
    assert backend.count() == 1
    with pytest.raises(AuthFailed):
        await auth.authenticate("token-5")
    assert backend.count() == 2


async def test_a_failed_backend_call_is_not_kept(auth: Authenticator, backend: Backend) -> None:
    backend.failing = True
    with pytest.raises(BackendUnavailable):
        await auth.authenticate("token-6")
    backend.failing = False
    assert (await auth.authenticate("token-6"))[0].id == 6
    assert backend.count() == 2


async def test_entries_live_the_ttl(auth: Authenticator, backend: Backend, clock: Clock) -> None:
    await auth.authenticate("token-7")
    clock.now += 59
    await auth.authenticate("token-7")
    assert backend.count() == 1
    clock.now += 1
    await auth.authenticate("token-7")
    assert backend.count() == 2


async def test_the_ttl_never_passes_exp(auth: Authenticator, backend: Backend,
                                        clock: Clock) -> None:
    token = jwt_like(8, exp=NOW + 5)
    await auth.authenticate(token)
    clock.now += 4
    await auth.authenticate(token)
    assert backend.count(token) == 1
    clock.now += 1
    await auth.authenticate(token)
    assert backend.count(token) == 2


async def test_an_expired_token_is_not_kept(auth: Authenticator, backend: Backend) -> None:
    token = jwt_like(8, exp=NOW - 1)
    await auth.authenticate(token)
    await auth.authenticate(token)
    assert backend.count(token) == 2
    assert len(auth.cache) == 0


async def test_ttl_zero_keeps_nothing_but_still_shares_calls(backend: Backend,
                                                             clock: Clock) -> None:
    auth = Authenticator(backend.validate, cache_ttl=0, clock=clock)
    await auth.authenticate("token-9")
    await auth.authenticate("token-9")
    assert backend.count() == 2
    backend.gate = asyncio.Event()
    waiting = [asyncio.create_task(auth.authenticate("token-9")) for _ in range(5)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    await asyncio.gather(*waiting)
    assert backend.count() == 3


async def test_bounded_least_recently_used_goes_first(backend: Backend, clock: Clock) -> None:
    auth = Authenticator(backend.validate, cache_ttl=60, cache_size=3, clock=clock)
    for user_id in (1, 2, 3):
        await auth.authenticate(f"token-{user_id}")
    await auth.authenticate("token-1")  # used again: token-2 is now the oldest use
    await auth.authenticate("token-4")
    assert len(auth.cache) == 3
    for user_id in (1, 3, 4):
        await auth.authenticate(f"token-{user_id}")
    assert backend.count() == 4
    await auth.authenticate("token-2")
    assert backend.count("token-2") == 2


async def test_forget_drops_the_token(auth: Authenticator, backend: Backend) -> None:
    await auth.authenticate("token-1")
    await auth.authenticate("token-11")
    auth.forget("token-1")
    await auth.authenticate("token-1")
    await auth.authenticate("token-11")
    assert backend.count("token-1") == 2
    assert backend.count("token-11") == 1


async def test_a_token_forgotten_while_validated_is_not_kept(auth: Authenticator,
                                                             backend: Backend) -> None:
    backend.gate = asyncio.Event()
    pending = asyncio.create_task(auth.authenticate("token-1"))
    await asyncio.sleep(0.01)
    auth.forget("token-1")
    backend.gate.set()
    assert (await pending)[0].id == 1
    await auth.authenticate("token-1")
    assert backend.count() == 2


async def test_the_token_itself_is_never_kept(auth: Authenticator) -> None:
    token = "secret-token-1"
    await auth.authenticate(token)
    cache = auth.cache
    assert len(cache) == 1
    assert token_digest(token) != token.encode() and len(token_digest(token)) == 32
    assert cache.forget(token_digest(token))  # kept under its digest


def test_cache_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        ValidationCache(-1)
    with pytest.raises(ValueError):
        ValidationCache(60, 0)


def test_prune_drops_expired_entries_only() -> None:
    """Tokens nobody presents again do not stay until newer ones push them out."""
    now = [1000.0]
    cache = ValidationCache(60.0, clock=lambda: now[0])
    cache.keep(b"old", User(1, "A", None), None)
    now[0] += 30
    cache.keep(b"new", User(2, "B", None), None)
    now[0] += 31  # "old" has lived 61 s, "new" 31 s
    assert cache.prune() == 1
    assert len(cache) == 1
    assert cache.lookup(b"new") is not None
