"""Authentication and the limits around it, as a client sees them: failed, timed out, repeated
and expiring auth, pipelining, connections per user and the per-connection rate limit."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from conftest import (
    CAROL_DAVE,
    GENERAL,
    JANE,
    JOHN,
    JOHN_JANE,
    Client,
    Connect,
    MakeGateway,
    backend_post,
    client_factory,
)

from gogate.devbackend import DevBackend


async def mint(backend: DevBackend, user_id: int, ttl: float) -> str:
    """A token from the development backend; ``ttl <= 0`` gives an expired one."""
    token: str = (await backend_post(backend, "/api/dev/tokens",
                                     {"user_id": user_id, "ttl": ttl}))["token"]
    return token


async def answers(client: Client, *events: str) -> dict[str, dict[str, Any]]:
    """The next frames, which must be exactly ``events`` in any order; by event name."""
    got = [await client.recv() for _ in events]
    assert sorted(f["event"] for f in got) == sorted(events), got
    return {f["event"]: f for f in got}


async def works(client: Client, user_id: int, chat_id: int = GENERAL) -> None:
    """The connection is open, authenticated as ``user_id``, and its writes reach the backend."""
    await client.send("send_message", {"chat_id": chat_id, "text": "still works"}, ref="w")
    got = await answers(client, "new_message", "ack")
    assert got["ack"]["ref"] == "w"
    assert got["new_message"]["data"]["user"]["id"] == user_id


# --- failed auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "reason"), [
    ("garbage", "Invalid token"),
    ("expired", "Token expired"),
    ("missing user", None),  # the backend answers {"valid": false}: no reason of its own
])
async def test_refused_token_is_auth_failed_with_the_backends_reason(
        connect: Connect, backend: DevBackend, kind: str, reason: str | None) -> None:
    token = {"garbage": "not-a-token",
             "expired": await mint(backend, JOHN, -60),
             "missing user": await mint(backend, 424242, 3600)}[kind]
    client = await connect()
    await client.send("auth", {"token": token}, ref="a")
    frame = await client.expect_error("AUTH_FAILED")
    assert frame["ref"] == "a"
    message = frame["data"]["message"]
    if reason is None:
        assert message.startswith("Authentication failed: ")
        assert len(message) > len("Authentication failed: ")
    else:
        assert message == f"Authentication failed: {reason}"
    await client.silent(0.2)  # the first failure does not close


async def test_two_failed_auths_keep_the_connection_open(connect: Connect,
                                                         tokens: dict[int, str]) -> None:
    client = await connect()
    for attempt in range(2):
        await client.send("auth", {"token": f"bad-{attempt}"}, ref=attempt)
        assert (await client.expect_error("AUTH_FAILED"))["ref"] == attempt
    await client.silent(0.2)
    assert (await client.auth(tokens[JOHN]))["user_id"] == JOHN
    await works(client, JOHN)


async def test_third_failed_auth_closes_1008(connect: Connect) -> None:
    client = await connect()
    for attempt in range(3):
        await client.send("auth", {"token": f"bad-{attempt}"})
        await client.expect_error("AUTH_FAILED")
    assert await client.closed() == 1008


# --- auth timeout -----------------------------------------------------------------------------


async def test_no_auth_within_auth_timeout_is_closed_1008(make_gateway: MakeGateway,
                                                          tokens: dict[int, str]) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        opened = time.monotonic()
        idle = await connect()
        busy = await connect()  # events other than a successful auth do not extend it
        await busy.send("auth", {"token": "bad"})
        await busy.expect_error("AUTH_FAILED")
        await busy.send("typing", {"chat_id": GENERAL, "is_typing": True})
        await busy.expect_error("AUTH_REQUIRED")
        assert await idle.closed(timeout=3) == 1008
        assert time.monotonic() - opened >= 0.45  # not before the deadline
        assert await busy.closed(timeout=3) == 1008


async def test_authenticated_connection_outlives_the_auth_deadline(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])
        await client.silent(1.0)
        await works(client, JOHN)


# --- repeated auth ----------------------------------------------------------------------------


async def test_reauth_with_a_fresh_token_of_the_same_user(connect: Connect, backend: DevBackend,
                                                         tokens: dict[int, str]) -> None:
    client = await connect(tokens[JOHN])
    fresh = await mint(backend, JOHN, 3600)
    await client.send("auth", {"token": fresh}, ref="again")
    frame = await client.expect("auth_success")
    assert frame["ref"] == "again" and frame["data"]["user_id"] == JOHN
    await works(client, JOHN)


async def test_auth_as_another_user_is_already_authenticated(connect: Connect,
                                                            tokens: dict[int, str]) -> None:
    john = await connect(tokens[JOHN])
    jane = await connect(tokens[JANE])
    await john.send("auth", {"token": tokens[JANE]}, ref="switch")
    frame = await john.expect_error("ALREADY_AUTHENTICATED")
    assert frame["ref"] == "switch"

    await works(john, JOHN, JOHN_JANE)  # still John: his message, in his chat
    assert (await jane.expect("new_message"))["data"]["user"]["id"] == JOHN
    await john.send("typing", {"chat_id": CAROL_DAVE, "is_typing": True}, ref="t")
    assert (await john.expect_error("NOT_A_MEMBER"))["ref"] == "t"


# --- token expiry -----------------------------------------------------------------------------


async def _expiring(backend: DevBackend, client: Client) -> float:
    """Authenticate with a token living about 1.5 s; returns its ``exp``."""
    token = await mint(backend, JOHN, 1.5)
    exp = _exp(token)
    await client.send("auth", {"token": token})
    await client.expect("auth_success")
    return exp


def _exp(token: str) -> float:
    """The ``exp`` claim of a JWT."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


async def test_expired_token_gets_auth_expired_then_closed_1008(make_gateway: MakeGateway,
                                                                backend: DevBackend) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        client = await connect()
        exp = await _expiring(backend, client)
        frame = await client.expect_error("AUTH_EXPIRED", timeout=exp - time.time() + 2)
        expired_at = time.time()
        assert expired_at >= exp - 0.05, "AUTH_EXPIRED came before the token's exp"
        assert expired_at <= exp + 0.5, "AUTH_EXPIRED came late"
        assert frame["data"]["message"]
        assert await client.closed(timeout=3) == 1008
        assert time.time() - expired_at >= 0.3  # it had AUTH_TIMEOUT to re-authenticate


async def test_fresh_auth_after_expiry_keeps_the_connection(make_gateway: MakeGateway,
                                                            backend: DevBackend) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        client = await connect()
        exp = await _expiring(backend, client)
        await client.expect_error("AUTH_EXPIRED", timeout=exp - time.time() + 2)
        fresh = await mint(backend, JOHN, 3600)
        assert (await client.auth(fresh))["user_id"] == JOHN
        await client.silent(0.8)  # past the window: not closed
        await works(client, JOHN)


# --- pipelining -------------------------------------------------------------------------------


async def test_auth_pipelined_with_a_write(connect: Connect, tokens: dict[int, str]) -> None:
    jane = await connect(tokens[JANE])
    client = await connect()
    await client.send("auth", {"token": tokens[JOHN]}, ref="a")
    await client.send("send_message", {"chat_id": GENERAL, "text": "right away"}, ref="m")
    await client.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="t")
    first = await client.expect("auth_success")
    assert first["ref"] == "a"
    got = await answers(client, "new_message", "ack", "ack")
    assert got["new_message"]["data"]["text"] == "right away"
    events = sorted([(await jane.recv())["event"] for _ in range(2)])
    assert events == ["new_message", "user_typing"]


async def test_failed_auth_pipelined_with_a_write(connect: Connect) -> None:
    client = await connect()
    await client.send("auth", {"token": "bad"}, ref="a")
    await client.send("send_message", {"chat_id": GENERAL, "text": "x"}, ref="m")
    assert (await client.expect_error("AUTH_FAILED"))["ref"] == "a"
    assert (await client.expect_error("AUTH_REQUIRED"))["ref"] == "m"


# --- connections per user ---------------------------------------------------------------------


async def test_too_many_connections_per_user(make_gateway: MakeGateway,
                                             tokens: dict[int, str]) -> None:
    gateway = await make_gateway(max_connections_per_user=2)
    async with client_factory(gateway.port) as connect:
        first, second = await connect(tokens[JOHN]), await connect(tokens[JOHN])
        third = await connect()
        await third.send("auth", {"token": tokens[JOHN]})
        await third.expect_error("TOO_MANY_CONNECTIONS")
        assert await third.closed() == 1008

        other = await connect(tokens[JANE])  # another user is not counted with John
        await works(first, JOHN)
        assert (await second.expect("new_message"))["data"]["text"] == "still works"
        assert (await other.expect("new_message"))["data"]["text"] == "still works"

        await first.close()
        fourth = await connect()
        assert (await fourth.auth(tokens[JOHN]))["user_id"] == JOHN
        await works(fourth, JOHN)
        assert (await second.expect("new_message"))["data"]["user"]["id"] == JOHN


# --- rate limit -------------------------------------------------------------------------------


async def test_rate_limit_refuses_the_excess_and_keeps_the_connection(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(rate_limit=5, rate_limit_burst=5)
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])
        for ref in range(10):
            await client.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref=ref)
        got = [await client.recv() for _ in range(10)]
        acked = sorted(f["ref"] for f in got if f["event"] == "ack")
        limited = sorted(f["ref"] for f in got if f["event"] == "error"
                         and f["data"]["code"] == "RATE_LIMITED")
        assert len(acked) + len(limited) == 10, got
        # the burst less the auth's token, plus what refilled meanwhile
        assert 4 <= len(acked) <= 5, got
        assert acked == list(range(len(acked))) and limited == list(range(len(acked), 10))

        await asyncio.sleep(1.0)
        await client.send("typing", {"chat_id": GENERAL, "is_typing": False}, ref="later")
        assert (await client.expect("ack"))["ref"] == "later"
