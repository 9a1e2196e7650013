"""gogate's internal API for the backend (docs/protocol.md) on a single worker: the key,
publish to users and to chats, the validation of publish bodies, who is online, and member-list
invalidation. ``/metrics`` on the same port needs no key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from conftest import (
    CAROL,
    CAROL_DAVE,
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    KEY,
    Client,
    MakeGateway,
    backend_post,
    client_factory,
    http_get,
)

from gogate.devbackend import DevBackend
from gogate.server import Gateway

PUBLISH = "/api/internal/v1/publish"
ONLINE = "/api/internal/v1/online"


def invalidate_path(chat_id: int) -> str:
    return f"/api/internal/v1/chats/{chat_id}/members/invalidate"


async def call(gateway: Gateway, method: str, path: str, *, body: Any = None,
               raw: bytes | None = None, key: str | None = KEY) -> tuple[int, Any]:
    """One request to the internal port; the JSON answer (None when empty)."""
    assert gateway.internal is not None
    headers = {} if key is None else {"X-Internal-API-Key": key}
    kwargs: dict[str, Any] = {"headers": headers}
    if raw is not None:
        kwargs["data"] = raw
        headers["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    url = f"http://127.0.0.1:{gateway.internal.port}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url,
                                                                   **kwargs) as response:
        text = await response.read()
        return response.status, (await response.json(content_type=None) if text else None)


async def publish(gateway: Gateway, body: dict[str, Any]) -> None:
    status, answer = await call(gateway, "POST", PUBLISH, body=body)
    assert status == 202, (status, answer)


async def online(gateway: Gateway, ids: str = "1,2,3,4") -> list[int]:
    status, answer = await call(gateway, "GET", f"{ONLINE}?user_ids={ids}")
    assert status == 200, (status, answer)
    assert set(answer) == {"online"}, answer
    return sorted(answer["online"])


async def online_becomes(gateway: Gateway, expected: list[int], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while (got := await online(gateway)) != expected:
        assert time.monotonic() < deadline, f"online is {got}, expected {expected}"
        await asyncio.sleep(0.05)


async def silent_all(*clients: Client, within: float = 0.3) -> None:
    await asyncio.gather(*(c.silent(within) for c in clients))


# --- the key --------------------------------------------------------------------------------


ENDPOINTS = [
    ("POST", PUBLISH, {"event": "x", "data": {}, "user_ids": [JOHN]}),
    ("POST", invalidate_path(GENERAL), None),
    ("GET", f"{ONLINE}?user_ids=1,2", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS,
                         ids=["publish", "invalidate", "online"])
async def test_every_call_needs_the_key(gateway: Gateway, tokens: dict[int, str], method: str,
                                        path: str, body: Any) -> None:
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        for key in (None, "wrong-key", "", KEY + "x", KEY[:-1], KEY.upper()):
            status, answer = await call(gateway, method, path, body=body, key=key)
            assert (status, answer) == (401, {"error": "Invalid API key"}), key
        await john.silent(0.3)  # a refused publish delivers nothing


async def test_the_internal_api_is_not_on_the_public_port(gateway: Gateway) -> None:
    for path in (PUBLISH, invalidate_path(GENERAL), f"{ONLINE}?user_ids=1", "/metrics"):
        status, _, _ = await http_get(f"http://127.0.0.1:{gateway.port}{path}",
                                      headers={"X-Internal-API-Key": KEY})
        assert status == 404, path


async def test_metrics_need_no_key(gateway: Gateway) -> None:
    assert gateway.internal is not None
    status, body, headers = await http_get(
        f"http://127.0.0.1:{gateway.internal.port}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "gogate_connections" in body.decode()


# --- publish --------------------------------------------------------------------------------


async def test_publish_to_user_ids_reaches_every_connection_of_those_users(
        gateway: Gateway, tokens: dict[int, str]) -> None:
    async with client_factory(gateway.port) as connect:
        john_a, john_b = await connect(tokens[JOHN]), await connect(tokens[JOHN])
        dave = await connect(tokens[DAVE])
        jane, carol = await connect(tokens[JANE]), await connect(tokens[CAROL])
        anonymous = await connect()  # not authenticated: never a receiver

        data = {"kind": "notice", "nested": {"n": 1, "list": [1, "two"]}, "text": "привет"}
        await publish(gateway, {"event": "system_notice", "data": data,
                                "user_ids": [JOHN, DAVE, 999, JOHN]})
        for client in (john_a, john_b, dave):
            assert await client.recv() == {"event": "system_notice", "data": data}
        await silent_all(john_a, john_b, dave, jane, carol, anonymous, within=0.5)


async def test_publish_to_a_chat_reaches_its_online_members_only(
        gateway: Gateway, tokens: dict[int, str]) -> None:
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        carol_a, carol_b = await connect(tokens[CAROL]), await connect(tokens[CAROL])
        dave = await connect(tokens[DAVE])

        await publish(gateway, {"event": "chat_updated", "data": {"chat_id": GENERAL},
                                "chat_id": GENERAL})
        for client in (john, jane, carol_a, carol_b):
            assert await client.recv() == {"event": "chat_updated",
                                           "data": {"chat_id": GENERAL}}
        await silent_all(john, jane, carol_a, carol_b, dave, within=0.5)

        await publish(gateway, {"event": "chat_updated", "data": {"chat_id": CAROL_DAVE},
                                "chat_id": CAROL_DAVE})
        for client in (carol_a, carol_b, dave):
            assert await client.recv() == {"event": "chat_updated",
                                           "data": {"chat_id": CAROL_DAVE}}
        await silent_all(john, jane, carol_a, carol_b, dave, within=0.5)


BAD_BODIES = {
    "no_event": {"data": {}, "user_ids": [JOHN]},
    "empty_event": {"event": "", "data": {}, "user_ids": [JOHN]},
    "event_not_string": {"event": 5, "data": {}, "user_ids": [JOHN]},
    "no_data": {"event": "x", "user_ids": [JOHN]},
    "data_list": {"event": "x", "data": [1, 2], "user_ids": [JOHN]},
    "data_string": {"event": "x", "data": "hello", "user_ids": [JOHN]},
    "data_null": {"event": "x", "data": None, "user_ids": [JOHN]},
    "data_number": {"event": "x", "data": 3, "user_ids": [JOHN]},
    "both_targets": {"event": "x", "data": {}, "chat_id": GENERAL, "user_ids": [JOHN]},
    "no_target": {"event": "x", "data": {}},
    "unknown_field": {"event": "x", "data": {}, "user_ids": [JOHN], "extra": 1},
    "chat_id_zero": {"event": "x", "data": {}, "chat_id": 0},
    "user_ids_not_list": {"event": "x", "data": {}, "user_ids": JOHN},
    "body_not_object": [1, 2, 3],
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_publish_refuses_bad_bodies(gateway: Gateway, body: Any) -> None:
    status, answer = await call(gateway, "POST", PUBLISH, body=body)
    assert status == 400, (status, answer)
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert isinstance(answer["error"], str) and answer["error"]


async def test_a_refused_publish_delivers_nothing(gateway: Gateway,
                                                  tokens: dict[int, str]) -> None:
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        for body in BAD_BODIES.values():
            status, _ = await call(gateway, "POST", PUBLISH, body=body)
            assert status == 400, body
        await silent_all(john, jane, within=0.3)


@pytest.mark.parametrize("raw", [b"", b"{not json", b'{"event":"x","data":{}'],
                         ids=["empty", "garbage", "truncated"])
async def test_publish_refuses_malformed_json(gateway: Gateway, raw: bytes) -> None:
    status, answer = await call(gateway, "POST", PUBLISH, raw=raw)
    assert status == 400, (status, answer)
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer


# --- online ---------------------------------------------------------------------------------


async def test_online_lists_exactly_the_connected_users(gateway: Gateway,
                                                        tokens: dict[int, str]) -> None:
    async with client_factory(gateway.port) as connect:
        assert await online(gateway) == []
        john_a, john_b = await connect(tokens[JOHN]), await connect(tokens[JOHN])
        carol = await connect(tokens[CAROL])
        await connect()  # an unauthenticated connection is nobody
        assert await online(gateway) == [JOHN, CAROL]
        assert await online(gateway, "3") == [CAROL]
        assert await online(gateway, "") == []

        await john_a.close()
        await asyncio.sleep(0.2)
        assert await online(gateway) == [JOHN, CAROL], "John still holds a device"
        await john_b.close()
        await online_becomes(gateway, [CAROL])
        await carol.close()
        await online_becomes(gateway, [])


async def test_online_refuses_bad_ids(gateway: Gateway) -> None:
    status, answer = await call(gateway, "GET", f"{ONLINE}?user_ids=1,two")
    assert status == 400 and isinstance(answer.get("error"), str), (status, answer)


# --- invalidate -----------------------------------------------------------------------------


async def test_invalidate_drops_the_cached_member_list(make_gateway: MakeGateway,
                                                       backend: DevBackend,
                                                       tokens: dict[int, str]) -> None:
    gateway = await make_gateway(members_cache_ttl=60)
    async with client_factory(gateway.port) as connect:
        john, jane, carol = (await connect(tokens[JOHN]), await connect(tokens[JANE]),
                             await connect(tokens[CAROL]))
        everyone = (john, jane, carol)

        async def announce(n: int) -> dict[str, Any]:
            frame = {"event": "announce", "data": {"n": n}}
            await publish(gateway, {**frame, "chat_id": GENERAL})
            return frame

        frame = await announce(1)  # fills the cache: 1, 2, 3
        for client in everyone:
            assert await client.recv() == frame

        await backend_post(backend, f"/api/dev/chats/{GENERAL}/members/{CAROL}", None,
                           method="DELETE")
        frame = await announce(2)
        for client in everyone:
            assert await client.recv() == frame, "the cached list (60 s) still holds Carol"

        await john.send("send_message", {"chat_id": GENERAL, "text": "cached"})
        for client in everyone:
            assert (await client.expect("new_message"))["data"]["text"] == "cached"

        status, answer = await call(gateway, "POST", invalidate_path(GENERAL))
        assert (status, answer) == (204, None)

        frame = await announce(3)
        for client in (john, jane):
            assert await client.recv() == frame
        await john.send("send_message", {"chat_id": GENERAL, "text": "fresh"})
        for client in (john, jane):
            assert (await client.expect("new_message"))["data"]["text"] == "fresh"
        await silent_all(*everyone, within=0.5)


async def test_invalidate_of_an_unknown_chat_is_harmless(gateway: Gateway,
                                                         tokens: dict[int, str]) -> None:
    status, _ = await call(gateway, "POST", invalidate_path(987654))
    assert status == 204
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        await publish(gateway, {"event": "e", "data": {}, "chat_id": GENERAL})
        for client in (john, jane):
            assert await client.recv() == {"event": "e", "data": {}}
