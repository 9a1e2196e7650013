"""Delivery as receivers see it: every message exactly once and in each sender's order, and the
member-list cache and typing gate keeping the backend calm under bursts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conftest import (
    CAROL,
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    Client,
    MakeGateway,
    backend_calls,
    backend_post,
    client_factory,
)

from gogate.devbackend import DevBackend

COUNT = 200


async def receive(client: Client, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    return [await client.recv(timeout) for _ in range(count)]


async def until_silent(client: Client, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every frame until none arrives for ``quiet`` seconds."""
    got: list[dict[str, Any]] = []
    while True:
        try:
            got.append(await client.recv(quiet))
        except TimeoutError:
            return got


async def reset_stats(backend: DevBackend) -> None:
    await backend_post(backend, "/api/dev/stats", None, method="DELETE")
    assert sum((await backend_calls(backend)).values()) == 0


def texts_of(frames: list[dict[str, Any]], sender: int | None = None) -> list[str]:
    return [f["data"]["text"] for f in frames if f["event"] == "new_message"
            and (sender is None or f["data"]["user"]["id"] == sender)]


async def test_one_sender_200_messages_arrive_once_each_in_order(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(rate_limit=0)
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        jane_a, jane_b = await connect(tokens[JANE]), await connect(tokens[JANE])
        carol, dave = await connect(tokens[CAROL]), await connect(tokens[DAVE])
        sent = [f"message {i:03d}" for i in range(COUNT)]

        async def send_all() -> None:
            for ref, text in enumerate(sent):  # no waiting for acks in between
                await john.send("send_message", {"chat_id": GENERAL, "text": text}, ref=ref)

        _, mine, *theirs = await asyncio.gather(
            send_all(), receive(john, 2 * COUNT), *(receive(c, COUNT)
                                                    for c in (jane_a, jane_b, carol)))

        acks = [f for f in mine if f["event"] == "ack"]
        assert [a["ref"] for a in acks] == list(range(COUNT))
        ids = [a["data"]["message_id"] for a in acks]
        assert ids == sorted(set(ids)), "acks name distinct message ids, in the sent order"
        assert texts_of(mine) == sent
        for frames in theirs:
            assert [f["event"] for f in frames] == ["new_message"] * COUNT
            assert texts_of(frames) == sent
            assert [f["data"]["id"] for f in frames] == ids
        await asyncio.gather(*(c.silent(0.3) for c in (john, jane_a, jane_b, carol, dave)))


async def test_two_interleaved_senders_keep_their_own_order(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(rate_limit=0)
    half = COUNT // 2
    async with client_factory(gateway.port) as connect:
        john, jane, carol = (await connect(tokens[JOHN]), await connect(tokens[JANE]),
                             await connect(tokens[CAROL]))
        sent = {user: [f"{user}:{i:03d}" for i in range(half)] for user in (JOHN, JANE)}

        async def send_all() -> None:
            for i in range(half):
                for user, client in ((JOHN, john), (JANE, jane)):
                    await client.send("send_message",
                                      {"chat_id": GENERAL, "text": sent[user][i]}, ref=i)

        _, at_john, at_jane, at_carol = await asyncio.gather(
            send_all(), receive(john, COUNT + half), receive(jane, COUNT + half),
            receive(carol, COUNT))

        for own, frames in ((JOHN, at_john), (JANE, at_jane), (None, at_carol)):
            assert len(texts_of(frames)) == COUNT
            for user in (JOHN, JANE):
                assert texts_of(frames, user) == sent[user], (own, user)
            if own is not None:
                assert [f["ref"] for f in frames if f["event"] == "ack"] == list(range(half))
        await asyncio.gather(*(c.silent(0.3) for c in (john, jane, carol)))


async def test_concurrent_typing_of_20_users_fetches_members_once(
        make_gateway: MakeGateway, backend: DevBackend) -> None:
    gateway = await make_gateway(members_cache_ttl=5)
    ids: list[int] = (await backend_post(backend, "/api/dev/users/bulk",
                                         {"count": 20, "prefix": "typer"}))["ids"]
    chat_id: int = (await backend_post(backend, "/api/dev/chats",
                                       {"name": "Typers", "member_ids": ids}))["id"]
    minted: dict[str, str] = (await backend_post(backend, "/api/dev/tokens/bulk",
                                                 {"user_ids": ids, "ttl": 3600}))["tokens"]
    async with client_factory(gateway.port) as connect:
        clients = list(await asyncio.gather(*(connect(minted[str(i)]) for i in ids)))
        await reset_stats(backend)

        typing = {"chat_id": chat_id, "is_typing": True}
        await asyncio.gather(*(c.send("typing", typing, ref=user_id)
                               for user_id, c in zip(ids, clients, strict=True)))
        received = await asyncio.gather(*(receive(c, len(ids)) for c in clients))

        for user_id, frames in zip(ids, received, strict=True):
            assert [f["ref"] for f in frames if f["event"] == "ack"] == [user_id]
            typers = sorted(f["data"]["user_id"] for f in frames if f["event"] == "user_typing")
            assert typers == sorted(set(ids) - {user_id})
        assert (await backend_calls(backend))["members"] == 1

        # a second round, after the first fetch has completed: served from the cache
        stopped = {"chat_id": chat_id, "is_typing": False}
        await asyncio.gather(*(c.send("typing", stopped, ref=user_id)
                               for user_id, c in zip(ids, clients, strict=True)))
        await asyncio.gather(*(receive(c, len(ids)) for c in clients))
        assert (await backend_calls(backend))["members"] == 1


async def test_without_the_cache_every_round_fetches_members(
        make_gateway: MakeGateway, backend: DevBackend, tokens: dict[int, str]) -> None:
    """The control of the test above: with MEMBERS_CACHE_TTL=0 the counting does see fetches."""
    gateway = await make_gateway(members_cache_ttl=0)
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        await reset_stats(backend)
        for state in (True, False):
            await john.send("typing", {"chat_id": GENERAL, "is_typing": state}, ref="t")
            assert (await john.expect("ack"))["ref"] == "t"
            assert (await jane.expect("user_typing"))["data"]["is_typing"] is state
        assert (await backend_calls(backend))["members"] == 2


async def test_typing_storm_is_gated(make_gateway: MakeGateway, backend: DevBackend,
                                     tokens: dict[int, str]) -> None:
    gateway = await make_gateway(rate_limit=0, members_cache_ttl=5)
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        await reset_stats(backend)

        started = time.monotonic()
        for _ in range(COUNT - 1):
            await john.send("typing", {"chat_id": GENERAL, "is_typing": True})
        await john.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="last")
        assert (await john.expect("ack"))["ref"] == "last"
        assert time.monotonic() - started < 1.0, "the storm must fit in one second"

        frames = await until_silent(jane)
        assert all(f["event"] == "user_typing" for f in frames), frames
        assert 1 <= len(frames) <= 2, frames
        await john.silent(0.1)

        await john.send("typing", {"chat_id": GENERAL, "is_typing": False}, ref="after")
        assert (await john.expect("ack"))["ref"] == "after"
        assert (await jane.expect("user_typing"))["data"]["is_typing"] is False
        assert (await backend_calls(backend))["members"] <= 1
