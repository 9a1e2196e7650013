"""The development backend, served on a real socket and called over real HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from gogate.devbackend import DevBackend, Store
from gogate.devbackend.demo import seed
from gogate.devbackend.tokens import (
    BadSignature,
    MalformedToken,
    TokenExpired,
    TokenSigner,
    new_private_key,
)

KEY = "test-internal-key"
ROOT = Path(__file__).resolve().parent.parent
# Signs with a key of its own: what a forger without the backend's private key can make.
FORGER = TokenSigner(new_private_key())
CLAIMS = {"user_id", "email", "first_name", "last_name", "username", "roles", "iat", "exp"}


class Client:
    """A session bound to one backend, with the demo tokens at hand."""

    def __init__(self, session: aiohttp.ClientSession, backend: DevBackend) -> None:
        self.session = session
        self.backend = backend
        self.url = backend.url
        self.tokens = backend.tokens()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: int | None = None,
        token: str | None = None,
        key: str | None = KEY,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {}
        if path.startswith("/api/internal/") and key is not None:
            headers["X-Internal-API-Key"] = key
        if user is not None:
            token = self.tokens[user]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": headers}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, f"{self.url}{path}", **kwargs) as resp:
            if resp.status == 204:
                assert await resp.read() == b""
                return 204, None
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()

    async def status(self, method: str, path: str, body: Any = None, **kwargs: Any) -> int:
        return (await self.call(method, path, body, **kwargs))[0]

    async def send(self, user: int, chat_id: int, text: str | None = "hi", **extra: Any) -> Any:
        status, body = await self.call(
            "POST", "/api/v1/messages", {"chat_id": chat_id, "content": text, **extra}, user=user
        )
        assert status == 201, body
        return body

    async def token(self, user_id: int, ttl: float) -> str:
        status, body = await self.call("POST", "/api/dev/tokens", {"user_id": user_id, "ttl": ttl})
        assert status == 200, body
        token: str = body["token"]
        return token


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    backend = DevBackend(port=0, internal_api_key=KEY)
    await backend.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(session, backend)
    finally:
        await backend.stop()


# tokens


def test_token_round_trip_and_failures() -> None:
    key = new_private_key()
    signer = TokenSigner(key)
    token = signer.issue(42, 60)
    assert signer.verify(token) == 42
    with pytest.raises(BadSignature):
        FORGER.verify(token)
    with pytest.raises(TokenExpired):
        signer.verify(signer.issue(42, 0))
    with pytest.raises(TokenExpired):
        signer.verify(signer.issue(42, 60, now=time.time() - 61))
    header, payload, _ = token.split(".")
    for bad in ("", "a.b", "a.b.c", f"{header}.{payload}", f"{header}.{payload}.!!", "é.é.é"):
        with pytest.raises(MalformedToken):
            signer.verify(bad)
    # "alg": "none" is refused even without a signature, and so is HS256 keyed with the
    # public key (the classic algorithm confusion)
    with pytest.raises(MalformedToken):
        signer.verify(f"eyJhbGciOiJub25lIn0.{payload}.")
    hs256 = jwt.encode({"user_id": 42, "iat": 1, "exp": 2**31}, b"k" * 32, algorithm="HS256")
    with pytest.raises(MalformedToken):
        signer.verify(hs256)
    for claims in ({"iat": 1, "exp": 2**31}, {"user_id": "42", "iat": 1, "exp": 2**31},
                   {"user_id": 42, "exp": 2**31}, {"user_id": 42, "iat": 1}):
        with pytest.raises(MalformedToken):
            signer.verify(jwt.encode(claims, key, algorithm="RS256"))


def test_store_keeps_key_and_seeds_once(tmp_path: Path) -> None:
    path = str(tmp_path / "dev.sqlite3")
    store = Store(path)
    assert seed(store) is True
    signer = TokenSigner.for_store(store)
    token = signer.issue(1, 60)
    store.close()
    store = Store(path)
    assert TokenSigner.for_store(store).verify(token) == 1
    assert TokenSigner.for_store(store).public_pem == signer.public_pem
    assert seed(store) is False
    assert [u.id for u in store.members(1) or []] == [1, 2, 3]
    assert not store.is_member(1, 4)
    ids = store.create_users(3, "bench")
    assert ids == [5, 6, 7]
    assert store.get_user(6) is not None
    store.close()


# RS256 tokens and the public key


async def public_key(api: Client) -> str:
    """The PEM served at ``GET /api/dev/public-key``."""
    async with api.session.get(f"{api.url}/api/dev/public-key") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-pem-file"
        return await resp.text()


async def test_tokens_carry_the_real_backends_claims_and_verify_with_the_public_key(
        api: Client) -> None:
    pem = await public_key(api)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert Path(api.backend.public_key_path).read_text() == pem == api.backend.public_key
    token = api.tokens[1]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, pem, algorithms=["RS256"])
    assert set(claims) == CLAIMS
    assert {k: v for k, v in claims.items() if k not in ("iat", "exp")} == {
        "user_id": 1, "email": "john@example.com", "first_name": "John", "last_name": "Doe",
        "username": "john@example.com", "roles": ["ROLE_USER"]}
    assert claims["exp"] - claims["iat"] in (86400, 86401)  # lives at least the TTL
    assert abs(claims["iat"] - time.time()) < 5

    minted = jwt.decode(await api.token(2, 60), pem, algorithms=["RS256"])
    assert (minted["user_id"], minted["first_name"]) == (2, "Jane")
    assert minted["exp"] - minted["iat"] in (60, 61)
    expired = await api.token(2, -1)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(expired, pem, algorithms=["RS256"])

    _, created = await api.call("POST", "/api/dev/users",
                                {"first_name": "Eve", "last_name": "Green"})
    _, minted_many = await api.call("POST", "/api/dev/tokens/bulk",
                                    {"user_ids": [created["user"]["id"], 3, 424242]})
    eve, carol, ghost = (jwt.decode(t, pem, algorithms=["RS256"])
                         for t in minted_many["tokens"].values())
    assert (eve["first_name"], eve["email"], eve["username"]) == ("Eve", None, "5")
    assert (carol["user_id"], carol["username"]) == (3, "carol@example.com")
    assert (ghost["user_id"], ghost["first_name"]) == (424242, None)
    # what the backend signs, it also accepts
    status, answer = await api.call("POST", "/api/internal/v1/auth/validate",
                                    {"token": minted_many["tokens"]["3"]})
    assert (status, answer["user"]["full_name"]) == (200, "Carol White")


async def test_the_public_key_file_goes_away_on_stop() -> None:
    backend = DevBackend(port=0)
    path = Path(backend.public_key_path)
    async with backend:
        signed = backend.tokens()[4]
        assert jwt.decode(signed, path.read_text(), algorithms=["RS256"])["user_id"] == 4
    assert not path.exists() and not path.parent.exists()


# internal API


async def test_validate(api: Client) -> None:
    status, body = await api.call(
        "POST", "/api/internal/v1/auth/validate", {"token": api.tokens[1]}
    )
    assert status == 200
    assert body == {
        "valid": True,
        "user": {
            "id": 1,
            "email": "john@example.com",
            "phone": "+79991234567",
            "first_name": "John",
            "last_name": "Doe",
            "full_name": "John Doe",
            "roles": ["ROLE_USER"],
            "is_active": True,
        },
    }


async def test_validate_errors(api: Client) -> None:
    path = "/api/internal/v1/auth/validate"
    body = {"token": api.tokens[1]}
    assert await api.call("POST", path, body, key=None) == (403, {"error": "Invalid API key"})
    assert await api.call("POST", path, body, key="wrong") == (403, {"error": "Invalid API key"})
    for bad in (b"not json", b"[1]", b'{"token": 5}', b"{}", b""):
        status, answer = await api.call("POST", path, data=bad)
        assert status == 400 and isinstance(answer["error"], str)
    forged = FORGER.issue(1, 60)
    assert await api.call("POST", path, {"token": forged}) == (401, {"error": "Invalid token"})
    assert await api.call("POST", path, {"token": "x.y"}) == (401, {"error": "Invalid token"})
    expired = await api.token(1, -1)
    assert await api.call("POST", path, {"token": expired}) == (401, {"error": "Token expired"})
    ghost = await api.token(999, 60)
    assert await api.call("POST", path, {"token": ghost}) == (200, {"valid": False})
    _, created = await api.call(
        "POST", "/api/dev/users", {"first_name": "Ina", "last_name": "Ctive", "is_active": False}
    )
    assert await api.call("POST", path, {"token": created["token"]}) == (200, {"valid": False})


async def test_token_expires_while_held(api: Client) -> None:
    token = await api.token(2, 1)
    path = "/api/internal/v1/auth/validate"
    status, body = await api.call("POST", path, {"token": token})
    assert status == 200 and body["valid"] is True
    await asyncio.sleep(2.05)
    assert await api.call("POST", path, {"token": token}) == (401, {"error": "Token expired"})


async def test_members(api: Client) -> None:
    status, body = await api.call("GET", "/api/internal/v1/chats/1/members")
    assert status == 200
    assert body == {
        "chat_id": 1,
        "members": [
            {"id": 1, "full_name": "John Doe", "phone": "+79991234567"},
            {"id": 2, "full_name": "Jane Smith", "phone": "+79991234568"},
            {"id": 3, "full_name": "Carol White", "phone": "+79991234569"},
        ],
    }
    missing = (404, {"error": "Chat not found"})
    assert await api.call("GET", "/api/internal/v1/chats/77/members") == missing
    assert await api.call("GET", "/api/internal/v1/chats/99999999999999999999/members") == missing
    status, _ = await api.call("GET", "/api/internal/v1/chats/1/members", key="nope")
    assert status == 403


# user API


async def test_send_message(api: Client) -> None:
    body = await api.send(2, 1, "Hello back!")
    created_at = body.pop("created_at")
    assert created_at.endswith("+00:00") and "T" in created_at
    assert body == {
        "id": body["id"],
        "chat_id": 1,
        "user": {
            "id": 2,
            "full_name": "Jane Smith",
            "first_name": "Jane",
            "last_name": "Smith",
            "phone": "+79991234568",
        },
        "type": "text",
        "text": "Hello back!",
        "reply_to": None,
        "attachments": [],
        "reactions": [],
        "read_count": 0,
        "mentions": None,
        "edited_at": None,
        "is_edited": False,
    }
    reply = await api.send(1, 1, None, reply_to_id=body["id"], attachment_ids=[1])
    assert reply["id"] > body["id"]
    assert reply["type"] == "file" and reply["text"] is None
    assert reply["reply_to"] == {
        "id": body["id"],
        "text": "Hello back!",
        "user": {"id": 2, "full_name": "Jane Smith"},
    }
    assert reply["attachments"] == [
        {"id": 1, "file_name": "report.pdf", "size": 48213, "url": "/files/1"}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"chat_id": "1", "content": "x"}, "chat_id"),
        ({"chat_id": 0, "content": "x"}, "chat_id"),
        ({"chat_id": True, "content": "x"}, "chat_id"),
        ({"content": "x"}, "chat_id"),
        ({"chat_id": 1, "content": 5}, "content"),
        ({"chat_id": 1, "content": "   "}, "content"),
        ({"chat_id": 1, "content": None, "attachment_ids": []}, "content"),
        ({"chat_id": 1, "content": "x" * 4001}, "content"),
        ({"chat_id": 1, "content": "x", "attachment_ids": ["1"]}, "attachment_ids"),
        ({"chat_id": 1, "content": "x", "attachment_ids": 1}, "attachment_ids"),
        ({"chat_id": 1, "content": "x", "reply_to_id": "a"}, "reply_to_id"),
        ({"chat_id": 1, "content": "x", "reply_to_id": 999}, "reply_to_id"),
        ({"chat_id": 1, "content": "x", "attachment_ids": [2]}, "attachment_ids"),
        ({"chat_id": 1, "content": "x", "attachment_ids": [99]}, "attachment_ids"),
    ],
)
async def test_send_message_validation(api: Client, body: Any, field: str) -> None:
    status, answer = await api.call("POST", "/api/v1/messages", body, user=1)
    assert status == 400, answer
    assert answer["message"] == "Validation failed"
    assert field in answer["details"]


async def test_send_message_errors(api: Client) -> None:
    path = "/api/v1/messages"
    ok = {"chat_id": 1, "content": "x"}
    assert await api.status("POST", path, ok, user=1) == 201
    assert await api.status("POST", path, ok, user=1, data=b"{oops") == 400
    assert await api.status("POST", path, ok, user=1, data=b"[]") == 400
    assert await api.call("POST", path, {"chat_id": 9, "content": "x"}, user=1) == (
        404,
        {"message": "Chat not found"},
    )
    denied = (403, {"message": "Access denied to this chat"})
    assert await api.call("POST", path, ok, user=4) == denied
    other_chat = await api.send(3, 3, "in chat 3")
    status, answer = await api.call("POST", path, {**ok, "reply_to_id": other_chat["id"]}, user=1)
    assert status == 400 and "reply_to_id" in answer["details"]
    assert await api.status("POST", path, {"chat_id": 2, "content": "ok"}, user=2) == 201


async def test_user_api_requires_a_valid_token(api: Client) -> None:
    expired = await api.token(1, 0)
    forged = FORGER.issue(1, 60)
    ghost = await api.token(12345, 60)
    requests = [
        ("/api/v1/messages", {"chat_id": 1, "content": "x"}),
        ("/api/v1/messages/1/reactions", {"emoji": "+1"}),
        ("/api/v1/messages/read", {"message_ids": [1]}),
    ]
    for path, body in requests:
        for token in (None, "", "garbage", expired, forged, ghost):
            status, answer = await api.call("POST", path, body, token=token)
            assert status == 401, (path, token)
            assert answer["message"] == "Unauthorized"
    status, answer = await api.call("POST", "/api/v1/messages", {}, token=expired)
    assert answer["details"] == {"token": "expired"}


async def test_reactions(api: Client) -> None:
    message = await api.send(1, 1)
    path = f"/api/v1/messages/{message['id']}/reactions"
    status, first = await api.call("POST", path, {"emoji": "👍"}, user=2)
    assert status == 201
    assert set(first) == {"message_id", "user_id", "emoji", "created_at"}
    assert (first["message_id"], first["user_id"], first["emoji"]) == (message["id"], 2, "👍")
    assert await api.call("POST", path, {"emoji": "👍"}, user=2) == (200, first)
    assert await api.status("POST", path, {"emoji": "🎉"}, user=2) == 201
    assert await api.call("POST", path, {"emoji": "👍"}, user=4) == (
        403,
        {"message": "Access denied to this chat"},
    )
    assert await api.call("POST", "/api/v1/messages/999/reactions", {"emoji": "x"}, user=1) == (
        404,
        {"message": "Message not found"},
    )
    for bad in ({}, {"emoji": ""}, {"emoji": 1}, {"emoji": "x" * 33}):
        status, answer = await api.call("POST", path, bad, user=1)
        assert status == 400 and "emoji" in answer["details"]
    assert await api.status("POST", path, user=1, data=b"nope") == 400


async def test_mark_read(api: Client) -> None:
    a = await api.send(1, 1, "a")
    b = await api.send(1, 2, "b")
    c = await api.send(3, 3, "c")
    path = "/api/v1/messages/read"
    ids = [a["id"], b["id"], a["id"]]
    assert await api.call("POST", path, {"message_ids": ids}, user=2) == (
        200,
        {"read": [a["id"], b["id"]], "user_id": 2},
    )
    assert await api.call("POST", path, {"message_ids": [a["id"], 999]}, user=2) == (
        404,
        {"message": "Message not found"},
    )
    assert await api.call("POST", path, {"message_ids": [a["id"], c["id"]]}, user=2) == (
        403,
        {"message": "Access denied to this chat"},
    )
    too_many = list(range(1, 102))
    bad: dict[str, Any]
    for bad in ({}, {"message_ids": []}, {"message_ids": [0]}, {"message_ids": too_many}):
        status, answer = await api.call("POST", path, bad, user=2)
        assert status == 400 and "message_ids" in answer["details"]


# development helpers


async def test_dev_users_and_tokens(api: Client) -> None:
    status, created = await api.call(
        "POST", "/api/dev/users", {"first_name": "Eve", "last_name": "Green", "phone": "+1"}
    )
    assert status == 201
    user = created["user"]
    assert user["full_name"] == "Eve Green" and user["phone"] == "+1" and user["id"] == 5
    status, answer = await api.call(
        "POST", "/api/internal/v1/auth/validate", {"token": created["token"]}
    )
    assert answer["user"]["id"] == 5
    assert await api.status("POST", "/api/dev/users", {"first_name": "x"}) == 400

    started = time.perf_counter()
    status, bulk = await api.call("POST", "/api/dev/users/bulk", {"count": 10_000, "prefix": "l"})
    assert status == 201 and len(bulk["ids"]) == 10_000 and bulk["ids"][0] == 6
    status, minted = await api.call(
        "POST", "/api/dev/tokens/bulk", {"user_ids": bulk["ids"], "ttl": 600}
    )
    assert status == 200 and len(minted["tokens"]) == 10_000
    assert time.perf_counter() - started < 5
    last = bulk["ids"][-1]
    _, answer = await api.call(
        "POST", "/api/internal/v1/auth/validate", {"token": minted["tokens"][str(last)]}
    )
    assert answer["user"]["id"] == last
    for bad in ({"count": 0}, {"count": "3"}, {"count": 2, "prefix": ""}):
        assert await api.status("POST", "/api/dev/users/bulk", bad) == 400
    for bad in ({"user_id": "1"}, {"user_id": 1, "ttl": "x"}):
        assert await api.status("POST", "/api/dev/tokens", bad) == 400
    assert await api.status("POST", "/api/dev/tokens/bulk", {"user_ids": []}) == 400


async def test_dev_chats_and_membership(api: Client) -> None:
    status, chat = await api.call("POST", "/api/dev/chats", {"name": "Ops", "member_ids": [4, 2]})
    assert (status, chat) == (201, {"id": 4, "name": "Ops", "member_ids": [2, 4]})
    status, answer = await api.call("POST", "/api/dev/chats", {"name": "X", "member_ids": [999]})
    assert status == 400 and "member_ids" in answer["details"]

    say = {"chat_id": 1, "content": "x"}
    assert await api.status("POST", "/api/v1/messages", say, user=4) == 403
    assert await api.call("POST", "/api/dev/chats/1/members", {"user_id": 4}) == (204, None)
    await api.send(4, 1, "hello from Dave")
    _, members = await api.call("GET", "/api/internal/v1/chats/1/members")
    assert [m["id"] for m in members["members"]] == [1, 2, 3, 4]
    assert await api.call("DELETE", "/api/dev/chats/1/members/4") == (204, None)
    assert await api.status("POST", "/api/v1/messages", say, user=4) == 403

    assert await api.call("POST", "/api/dev/chats/99/members", {"user_id": 1}) == (
        404,
        {"message": "Chat not found"},
    )
    assert await api.call("POST", "/api/dev/chats/1/members", {"user_id": 999}) == (
        404,
        {"message": "User not found"},
    )
    assert await api.status("DELETE", "/api/dev/chats/99/members/1") == 404


async def test_dev_attachments(api: Client) -> None:
    status, attachment = await api.call(
        "POST", "/api/dev/attachments", {"user_id": 3, "file_name": "a.txt", "size": 5}
    )
    assert status == 201
    assert attachment == {
        "id": 3,
        "owner_id": 3,
        "file_name": "a.txt",
        "size": 5,
        "url": "/files/3",
    }
    message = await api.send(3, 3, "see file", attachment_ids=[3])
    assert message["type"] == "text" and message["attachments"][0]["id"] == 3
    assert await api.status("POST", "/api/dev/attachments", {"user_id": 3}) == 400
    ghost = {"user_id": 99, "file_name": "a"}
    assert await api.status("POST", "/api/dev/attachments", ghost) == 404


async def test_unknown_route_and_method_answer_json(api: Client) -> None:
    assert await api.call("GET", "/nothing/here") == (404, {"message": "Not Found"})
    status, answer = await api.call("GET", "/api/v1/messages")
    assert status == 405 and "message" in answer


# fault injection and stats


async def test_fault_delay_does_not_block_other_requests(api: Client) -> None:
    fault = {"delay": 0.5, "match": "/api/v1/messages"}
    assert await api.call("PUT", "/api/dev/faults", fault) == (204, None)
    started = time.perf_counter()
    slow = asyncio.create_task(api.send(1, 1, "slow"))
    await asyncio.sleep(0.05)
    status, _ = await api.call("GET", "/api/internal/v1/chats/1/members")
    assert status == 200 and not slow.done()
    assert time.perf_counter() - started < 0.4
    assert (await slow)["text"] == "slow"
    assert time.perf_counter() - started >= 0.5
    assert await api.call("DELETE", "/api/dev/faults") == (204, None)
    started = time.perf_counter()
    await api.send(1, 1, "fast")
    assert time.perf_counter() - started < 0.4


async def test_fault_status_with_count(api: Client) -> None:
    fault: dict[str, Any] = {"status": 503, "count": 2}
    assert await api.call("PUT", "/api/dev/faults", fault) == (204, None)
    path, body = "/api/v1/messages", {"chat_id": 1, "content": "x"}
    injected = (503, {"message": "Injected failure"})
    assert await api.call("POST", path, body, user=1) == injected
    # dev endpoints are never affected, and internal paths are outside the default match
    assert await api.status("GET", "/api/dev/stats") == 200
    assert await api.status("GET", "/api/internal/v1/chats/1/members") == 200
    assert await api.call("POST", path, body, user=1) == injected
    assert await api.status("POST", path, body, user=1) == 201

    fault = {"status": 500, "match": "/api/internal/", "delay": 0.1}
    assert await api.call("PUT", "/api/dev/faults", fault) == (204, None)
    for _ in range(3):
        assert await api.call("GET", "/api/internal/v1/chats/1/members") == (
            500,
            {"error": "Injected failure"},
        )
    assert await api.status("POST", path, body, user=1) == 201
    await api.call("DELETE", "/api/dev/faults")
    assert await api.status("GET", "/api/internal/v1/chats/1/members") == 200

    for bad in ({"delay": -1}, {"status": 99}, {"match": "api"}, {"count": 0}, {"delay": "1"}):
        assert await api.status("PUT", "/api/dev/faults", bad) == 400, bad


async def test_stats(api: Client) -> None:
    zero = {"validate": 0, "members": 0, "send_message": 0, "add_reaction": 0, "mark_read": 0}
    assert await api.call("GET", "/api/dev/stats") == (200, {"calls": zero})
    message = await api.send(1, 1)
    await api.call("POST", "/api/v1/messages", {"chat_id": 1, "content": "x"}, user=4)  # 403
    await api.call("POST", "/api/internal/v1/auth/validate", {"token": api.tokens[1]})
    await api.call("POST", "/api/internal/v1/auth/validate", {}, key="wrong")  # 403
    await api.call("GET", "/api/internal/v1/chats/1/members")
    await api.call("POST", f"/api/v1/messages/{message['id']}/reactions", {"emoji": "x"}, user=1)
    await api.call("PUT", "/api/dev/faults", {"status": 502})
    await api.call("POST", "/api/v1/messages/read", {"message_ids": [message["id"]]}, user=1)
    await api.call("DELETE", "/api/dev/faults")
    assert await api.call("GET", "/api/dev/stats") == (
        200,
        {
            "calls": {
                "validate": 2,
                "members": 1,
                "send_message": 2,
                "add_reaction": 1,
                "mark_read": 1,
            }
        },
    )
    assert await api.call("DELETE", "/api/dev/stats") == (204, None)
    assert await api.call("GET", "/api/dev/stats") == (200, {"calls": zero})


# the command line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_command_line_prints_tokens_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "cli.sqlite3"
    key_file = tmp_path / "public.pem"
    argv = ["--port", str(port), "--db", str(db), "--public-key-out", str(key_file), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gogate.devbackend", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [await asyncio.to_thread(proc.stdout.readline) for _ in range(5)]
        assert lines[0].strip() == f"listening on http://127.0.0.1:{port}"
        names = ["John Doe", "Jane Smith", "Carol White", "Dave Black"]
        tokens = {}
        for user_id, (name, line) in enumerate(zip(names, lines[1:], strict=True), start=1):
            prefix = f"user {user_id} {name}: "
            assert line.startswith(prefix), line
            tokens[user_id] = line[len(prefix) :].strip()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/api/internal/v1/auth/validate",
                json={"token": tokens[4]},
                headers={"X-Internal-API-Key": "dev-internal-key"},
            ) as resp,
        ):
            answer = await resp.json()
        assert answer["user"]["full_name"] == "Dave Black"
        claims = jwt.decode(tokens[4], key_file.read_text(), algorithms=["RS256"])
        assert (claims["user_id"], claims["last_name"]) == (4, "Black")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the same database keeps the key, so the printed tokens stay valid
    store = Store(str(db))
    assert TokenSigner.for_store(store).verify(tokens[1]) == 1
    store.close()


async def test_junk_bodies_never_answer_500(api: Client) -> None:
    paths = [
        "/api/internal/v1/auth/validate",
        "/api/v1/messages",
        "/api/v1/messages/1/reactions",
        "/api/v1/messages/read",
        "/api/dev/users",
        "/api/dev/users/bulk",
        "/api/dev/tokens",
        "/api/dev/tokens/bulk",
        "/api/dev/chats",
        "/api/dev/chats/1/members",
        "/api/dev/attachments",
    ]
    junk = [
        b"",
        b"null",
        b"\xff\xfe",
        b'"\\ud800"',
        b'{"chat_id": 1e999, "ttl": 1e999, "count": 1e999, "user_id": 99999999999999999999}',
        b'{"user_ids": [1.5], "message_ids": [true], "member_ids": null, "name": {}}',
    ]
    await api.send(1, 1)
    for path in paths:
        for data in junk:
            status = await api.status("POST", path, user=1, data=data)
            assert 400 <= status < 500, (path, data, status)
    for data in junk[:-1]:
        assert await api.status("PUT", "/api/dev/faults", data=data) == 400, data


# the original Go gateway's shapes


@pytest.fixture
async def legacy() -> AsyncIterator[Client]:
    backend = DevBackend(port=0, internal_api_key=KEY, legacy_shapes=True)
    await backend.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(session, backend)
    finally:
        await backend.stop()


async def test_legacy_shapes_of_users_and_members(legacy: Client) -> None:
    status, body = await legacy.call("POST", "/api/internal/v1/auth/validate",
                                     {"token": legacy.tokens[1]})
    assert (status, body) == (200, {"valid": True, "user": {
        "id": 1, "user_id": 1, "name": "John Doe", "phone": "+79991234567", "active": True}})
    status, body = await legacy.call("GET", "/api/internal/v1/chats/3/members")
    assert (status, body) == (200, {"chat_id": 3, "members": [
        {"user_id": 3, "name": "Carol White", "phone": "+79991234569"},
        {"user_id": 4, "name": "Dave Black", "phone": "+79991234570"}]})
    assert await legacy.call("GET", "/api/internal/v1/chats/9/members") == (
        404, {"error": "Chat not found"})


async def test_legacy_shapes_of_message_bodies(legacy: Client) -> None:
    path = "/api/v1/messages"
    # exactly what the original sends for a client's {"chat_id": 1, "text": "Hello!"}
    go_body = {"chatId": 1, "text": "Hello!", "replyToId": None, "attachmentIds": None}
    status, first = await legacy.call("POST", path, go_body, user=2)
    assert status == 201, first
    assert (first["chat_id"], first["text"], first["user"]["id"]) == (1, "Hello!", 2)
    status, reply = await legacy.call(
        "POST", path, {"chatId": 1, "text": "", "replyToId": first["id"], "attachmentIds": [1]},
        user=1)
    assert status == 201, reply
    assert (reply["type"], reply["reply_to"]["id"], reply["attachments"][0]["id"]) == (
        "file", first["id"], 1)

    status, answer = await legacy.call("POST", path, {"chat_id": 1, "content": "x"}, user=1)
    assert status == 400 and answer["error"] == "Validation failed"
    assert "chatId" in answer["details"]
    status, answer = await legacy.call("POST", path, {**go_body, "text": ""}, user=1)
    assert status == 400 and "text" in answer["details"]
    assert await legacy.call("POST", path, go_body, user=4) == (
        403, {"error": "Access denied to this chat"})
    status, answer = await legacy.call("POST", path, go_body, token="garbage")
    assert status == 401 and answer["error"] == "Unauthorized"

    read = "/api/v1/messages/read"
    assert await legacy.call("POST", read, {"messageIds": [first["id"]]}, user=3) == (
        200, {"read": [first["id"]], "user_id": 3})
    status, answer = await legacy.call("POST", read, {"message_ids": [first["id"]]}, user=3)
    assert status == 400 and "messageIds" in answer["details"]
    reaction = f"/api/v1/messages/{first['id']}/reactions"
    assert await legacy.status("POST", reaction, {"emoji": "👍"}, user=3) == 201


async def test_legacy_shapes_leave_the_development_helpers_alone(legacy: Client) -> None:
    status, created = await legacy.call("POST", "/api/dev/users",
                                        {"first_name": "Eve", "last_name": "Green"})
    assert status == 201 and created["user"]["full_name"] == "Eve Green"
    assert await legacy.call("POST", "/api/dev/chats/99/members", {"user_id": 1}) == (
        404, {"message": "Chat not found"})
    _, stats = await legacy.call("GET", "/api/dev/stats")
    assert stats["calls"]["validate"] == 0
