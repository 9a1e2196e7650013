"""Small parts tested directly: the member cache, the typing gate, token expiry, the relayed
message index, the Origin policy, logging and the error tables."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from gogate.errors import (
    CLOSE_REASONS,
    BackendUnavailable,
    ClientError,
    Close,
    ErrorCode,
)
from gogate.handlers import RecentMessages, TypingGate, token_expiry
from gogate.log import JsonFormatter, TextFormatter, redact
from gogate.members import MembersCache
from gogate.server import OriginPolicy


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


# --- MembersCache --------------------------------------------------------------------------


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


# --- TypingGate ----------------------------------------------------------------------------


def test_typing_gate() -> None:
    clock = Clock()
    gate = TypingGate(clock)
    assert gate.allow(1, 10, True)
    clock.now += 0.5
    assert not gate.allow(1, 10, True)  # same state within 1 s
    assert gate.allow(2, 10, True)  # another user
    assert gate.allow(1, 11, True)  # another chat
    assert gate.allow(1, 10, False)  # a change passes at once
    assert gate.allow(1, 10, True)  # and back
    clock.now += 0.99
    assert not gate.allow(1, 10, True)
    clock.now += 0.02
    assert gate.allow(1, 10, True)  # after 1 s the same state passes again


def test_typing_gate_prune_keeps_behaviour() -> None:
    clock = Clock()
    gate = TypingGate(clock)
    gate.allow(1, 10, True)
    clock.now += 0.5
    gate.prune()
    assert not gate.allow(1, 10, True)
    clock.now += 2
    gate.prune()
    assert gate.allow(1, 10, True)


# --- token_expiry --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: object) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'signature')}"


@pytest.mark.parametrize(("claims", "expected"), [
    ({"sub": "1", "exp": 1893456000}, 1893456000.0),
    ({"sub": "1", "exp": 1893456000.5}, 1893456000.5),
    ({"sub": "12345", "name": "padding needed?"}, None),
    ({"exp": "1893456000"}, None),
    ({"exp": True}, None),
    ({"exp": None}, None),
    ([1, 2, 3], None),
    ("just a string", None),
])
def test_token_expiry(claims: object, expected: float | None) -> None:
    assert token_expiry(jwt(claims)) == expected


@pytest.mark.parametrize("token", [
    "", "opaque-token", "a.b", "a.b.c.d", "a.!!!!.c", "a..c",
    f"x.{_b64(b'not json')}.y", f"x.{_b64(b'{')}.y", f"x.{_b64(bytes([0xff, 0xfe]))}.y",
])
def test_token_expiry_garbage(token: str) -> None:
    assert token_expiry(token) is None


def test_token_expiry_of_padding_lengths() -> None:
    for extra in range(4):  # every base64 padding remainder
        claims = {"exp": 2000000000, "pad": "x" * extra}
        assert token_expiry(jwt(claims)) == 2000000000.0


# --- RecentMessages ------------------------------------------------------------------------


def test_recent_messages_bounded() -> None:
    recent = RecentMessages(capacity=3)
    for message_id in (1, 2, 3):
        recent.remember(message_id, message_id * 10)
    assert [recent.chat_of(i) for i in (1, 2, 3)] == [10, 20, 30]
    recent.remember(4, 40)
    assert recent.chat_of(1) is None  # the oldest is forgotten first
    assert [recent.chat_of(i) for i in (2, 3, 4)] == [20, 30, 40]
    for message_id in range(100, 200):
        recent.remember(message_id, 1)
    assert sum(recent.chat_of(i) is not None for i in range(0, 200)) == 3
    assert recent.chat_of(999) is None


# --- OriginPolicy --------------------------------------------------------------------------


@pytest.mark.parametrize(("patterns", "origin", "allowed"), [
    ((), "https://anything.example", True),
    ((), None, True),
    (("https://app.example.com",), "https://app.example.com", True),
    (("https://app.example.com",), "https://APP.Example.COM", True),
    (("HTTPS://App.Example.com",), "https://app.example.com", True),
    (("https://app.example.com",), "http://app.example.com", False),
    (("https://app.example.com",), "https://app.example.com:8443", False),
    (("https://app.example.com",), "https://app.example.com.evil.com", False),
    (("https://app.example.com",), "https://evil.com", False),
    (("https://app.example.com",), "null", False),
    (("https://app.example.com",), None, True),
    (("https://app.example.com",), "https://appXexample.com", False),
    (("https://*.example.com",), "https://a.example.com", True),
    (("https://*.example.com",), "https://a.b.example.com", True),
    (("https://*.example.com",), "https://A.EXAMPLE.com", True),
    (("https://*.example.com",), "https://example.com", False),
    (("https://*.example.com",), "https://evil.com/.example.com", False),
    (("https://*.example.com",), "https://evilexample.com", False),
    (("https://*.example.com",), "https://a.example.com.evil.com", False),
    (("https://*.example.com",), "http://a.example.com", False),
    (("https://a.com", "https://*.b.com"), "https://a.com", True),
    (("https://a.com", "https://*.b.com"), "https://x.b.com", True),
    (("https://a.com", "https://*.b.com"), "https://b.com", False),
    (("https://a.com", "https://*.b.com"), "https://a.com.b.co", False),
    # a lone "*" is the wildcard for every origin (ALLOWED_ORIGINS=*)
    (("*",), "https://a.com", True),
    (("*",), "http://localhost:3000", True),
])
def test_origin_policy(patterns: tuple[str, ...], origin: str | None, allowed: bool) -> None:
    assert OriginPolicy(patterns).allows(origin) is allowed


# --- logging -------------------------------------------------------------------------------

JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIiwiZXhwIjoxODkzNDU2MDAwfQ"
       ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU")


@pytest.mark.parametrize("text", [
    f"token {JWT} refused",
    f"Authorization: Bearer {JWT}",
    "Authorization: Bearer opaque-secret-value",
    "authorization: bearer opaque-secret-value",
])
def test_redact_removes_credentials(text: str) -> None:
    out = redact(text)
    assert JWT not in out
    assert "opaque-secret-value" not in out
    assert "eyJ" not in out


def test_redact_leaves_plain_text() -> None:
    assert redact("user 1 joined chat 2") == "user 1 joined chat 2"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("gogate.test_units")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_formatter_one_object_per_line(
        captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.info("connected", extra={"user_id": 7, "chat_id": 3, "conn_id": 11})
    logger.warning("two\nlines with %s", f"Bearer {JWT}", extra={"user_id": 8})
    try:
        raise ValueError(f"boom {JWT}")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["msg"] == "connected"
    assert first["level"] == "info"
    assert first["logger"] == "gogate.test_units"
    assert (first["user_id"], first["chat_id"], first["conn_id"]) == (7, 3, 11)
    assert second["user_id"] == 8
    assert "chat_id" not in second
    assert second["msg"].startswith("two\nlines")
    assert JWT not in stream.getvalue()
    assert "ValueError" in third["exc"]


def test_text_formatter_redacts_and_carries_context(
        captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(TextFormatter())
    logger.info("auth with %s", JWT, extra={"user_id": 5, "chat_id": 6})
    out = stream.getvalue()
    assert JWT not in out
    assert "user_id=5" in out and "chat_id=6" in out


# --- errors --------------------------------------------------------------------------------

CONTRACT_ERROR_CODES = [
    "INVALID_JSON", "UNKNOWN_EVENT", "INVALID_PAYLOAD", "INVALID_CHAT", "AUTH_REQUIRED",
    "AUTH_FAILED", "AUTH_EXPIRED", "ALREADY_AUTHENTICATED", "NOT_A_MEMBER", "FORBIDDEN",
    "NOT_FOUND", "VALIDATION_FAILED", "RATE_LIMITED", "TOO_MANY_CONNECTIONS",
    "BACKEND_UNAVAILABLE",
]


@pytest.mark.parametrize("close", list(Close), ids=lambda c: c.name)
def test_close_reasons(close: Close) -> None:
    code, reason, reconnect = close.value
    assert code in {1001, 1002, 1003, 1007, 1008, 1009, 1013}
    assert 0 < len(reason.encode("utf-8")) < 123
    assert isinstance(reconnect, bool)
    assert CLOSE_REASONS[close.name] == close.value


def test_close_codes_of_the_contract() -> None:
    assert Close.MESSAGE_TOO_BIG.value.code == 1009
    assert Close.INVALID_UTF8.value.code == 1007
    assert Close.BINARY_FRAME.value.code == 1003
    assert Close.PROTOCOL_ERROR.value.code == 1002
    assert Close.SLOW_CONSUMER.value.code == 1013
    assert Close.SHUTDOWN.value.code == 1001
    assert Close.AUTH_TIMEOUT.value.code == 1008


@pytest.mark.parametrize("code", CONTRACT_ERROR_CODES)
def test_error_code_exists(code: str) -> None:
    assert ErrorCode[code] == code
    assert ErrorCode(code).value == code
