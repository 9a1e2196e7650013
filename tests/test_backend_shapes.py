"""The backend as it really answers: user and member shapes, and the mapping of its statuses to
the client error codes (docs/protocol.md).

The status tests run ``BackendClient`` against a real HTTP server started here: a stand-in for a
misbehaving backend, since the development backend cannot produce every odd status and shape.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web

from gogate.backend import BackendClient, SentMessage, User, member_ids, parse_user
from gogate.errors import (
    AuthExpired,
    AuthFailed,
    BackendRejected,
    BackendUnavailable,
    ClientError,
    ErrorCode,
)

KEY = "internal-test-key"
TOKEN = "user-token-123"

# --- user shapes ---------------------------------------------------------------------------

BUZZCHAT_VALIDATE = (
    b'{"valid": true, "user": {"id": 1, "email": "a@b.c", "phone": "+79991234567", '
    b'"first_name": "John", "last_name": "Doe", "full_name": "John Doe", '
    b'"roles": ["ROLE_USER"], "is_active": true}}'
)
BUZZCHAT_MEMBERS = (
    b'{"chat_id": 1, "members": [{"id": 1, "full_name": "John Doe", "phone": "+7999..."}, '
    b'{"id": 2, "...": "..."}]}'
)
BUZZCHAT_MESSAGE = (
    b'{"id": 124, "chat_id": 1, "user": {"id": 2, "full_name": "Jane Smith", "...": "..."}, '
    b'"type": "text",\n "text": "Hello back!", "reply_to": null, "attachments": [], '
    b'"reactions": [], "read_count": 0,\n "mentions": null, '
    b'"created_at": "2025-10-25T12:34:56+00:00", "edited_at": null, "is_edited": false}'
)


@pytest.mark.parametrize(("raw", "name"), [
    ({"id": 1, "name": "Nick"}, "Nick"),
    ({"id": 1, "name": "Nick", "full_name": "John Doe", "first_name": "J"}, "Nick"),
    ({"id": 1, "full_name": "John Doe"}, "John Doe"),
    ({"id": 1, "full_name": "John Doe", "first_name": "X", "last_name": "Y"}, "John Doe"),
    ({"id": 1, "name": "", "full_name": "John Doe"}, "John Doe"),
    ({"id": 1, "name": None, "full_name": "John Doe"}, "John Doe"),
    ({"id": 1, "first_name": "John", "last_name": "Doe"}, "John Doe"),
    ({"id": 1, "first_name": "John"}, "John"),
    ({"id": 1, "last_name": "Doe"}, "Doe"),
    ({"id": 1, "first_name": "John", "last_name": None}, "John"),
    ({"id": 1, "first_name": "", "last_name": "Doe"}, "Doe"),
])
def test_user_name(raw: dict[str, Any], name: str) -> None:
    assert parse_user(raw).name == name


def test_user_phone_optional() -> None:
    assert parse_user({"id": 3, "name": "A"}) == User(3, "A", None)
    assert parse_user({"id": 3, "name": "A", "phone": None}).phone is None
    assert parse_user({"id": 3, "name": "A", "phone": "+7"}).phone == "+7"


def test_user_without_any_name_still_has_one() -> None:
    user = parse_user({"id": 5})
    assert user.id == 5
    assert isinstance(user.name, str) and user.name.strip()


@pytest.mark.parametrize("bad", [{"name": "no id"}, {"id": True, "name": "x"},
                                 {"id": "1", "name": "x"}])
def test_user_without_integer_id_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_user(bad)


def test_buzzchat_validate_example() -> None:
    user = msgspec.json.decode(BUZZCHAT_VALIDATE)["user"]
    assert parse_user(user) == User(1, "John Doe", "+79991234567")


# --- member shapes -------------------------------------------------------------------------


@pytest.mark.parametrize(("members", "ids"), [
    ([], set()),
    ([{"user_id": 1}, {"id": 2}, {"userId": 3}], {1, 2, 3}),
    ([{"user_id": 5, "id": 99, "userId": 98}], {5}),
    ([{"id": 7, "userId": 8}], {7}),
    ([{"user_id": True, "id": 4}], {4}),
    ([{"user_id": None, "id": 4}], {4}),
    ([{"id": False}, {"userId": True}, {"id": 6}], {6}),
    ([{"name": "no id"}, {"id": 1}], {1}),
    ([{"id": 1}, {"user_id": 1}], {1}),
])
def test_member_ids(members: list[dict[str, Any]], ids: set[int]) -> None:
    assert member_ids(members) == frozenset(ids)


def test_buzzchat_members_example() -> None:
    members = msgspec.json.decode(BUZZCHAT_MEMBERS)["members"]
    assert member_ids(members) == frozenset({1, 2})


# --- a stand-in backend on a real socket ---------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes = b"{}"
    hang: bool = False  # wait until the test ends before answering


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeBackend:
    url: str = ""
    replies: dict[tuple[str, str], Reply] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, method: str, path: str, status: int, body: Any = None,
               hang: bool = False) -> None:
        raw = body if isinstance(body, bytes) else json.dumps({} if body is None else body
                                                              ).encode()
        self.replies[(method, path)] = Reply(status, raw, hang)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        reply = self.replies.get((request.method, request.path), Reply(418, b"{}"))
        if reply.hang:
            await self.release.wait()
        return web.Response(status=reply.status, body=reply.body,
                            content_type="application/json")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBackend]:
    backend = FakeBackend()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    backend.url = f"http://127.0.0.1:{port}"
    yield backend
    backend.release.set()
    await runner.cleanup()


async def make_client(url: str, timeout: float = 5.0) -> BackendClient:
    client = BackendClient(url, KEY, timeout=timeout, max_connections=4)
    await client.start()
    return client


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[BackendClient]:
    backend = await make_client(fake.url)
    yield backend
    await backend.close()


VALIDATE = ("POST", "/api/internal/v1/auth/validate")
MEMBERS = ("GET", "/api/internal/v1/chats/1/members")
MESSAGES = ("POST", "/api/v1/messages")
REACTIONS = ("POST", "/api/v1/messages/9/reactions")
READ = ("POST", "/api/v1/messages/read")


def assert_safe(message: str, fake: FakeBackend) -> None:
    """An error message reveals no address, port or exception text."""
    port = fake.url.rsplit(":", 1)[1]
    for leak in ("127.0.0.1", "localhost", port, "Error", "Exception", "Traceback", "aiohttp"):
        assert leak not in message, (leak, message)


# --- validate ------------------------------------------------------------------------------


async def test_validate_success_buzzchat_shape(fake: FakeBackend,
                                               client: BackendClient) -> None:
    fake.answer(*VALIDATE, 200, BUZZCHAT_VALIDATE)
    user = await client.validate_token(TOKEN)
    assert user == User(1, "John Doe", "+79991234567")
    [seen] = fake.seen
    assert seen.headers.get("X-Internal-API-Key") == KEY
    assert "Authorization" not in seen.headers
    assert json.loads(seen.body) == {"token": TOKEN}


@pytest.mark.parametrize("body", [{"valid": False}, {"valid": False, "user": None}, {}])
async def test_validate_200_not_valid_is_auth_failed(fake: FakeBackend, client: BackendClient,
                                                     body: dict[str, Any]) -> None:
    fake.answer(*VALIDATE, 200, body)
    with pytest.raises(AuthFailed) as info:
        await client.validate_token(TOKEN)
    assert info.value.code is ErrorCode.AUTH_FAILED
    assert info.value.message.startswith("Authentication failed: ")


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_validate_refusal_carries_backend_reason(fake: FakeBackend, client: BackendClient,
                                                       status: int) -> None:
    fake.answer(*VALIDATE, status, {"error": "Token expired"})
    with pytest.raises(AuthFailed) as info:
        await client.validate_token(TOKEN)
    assert info.value.code is ErrorCode.AUTH_FAILED
    assert info.value.message == "Authentication failed: Token expired"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_validate_5xx_is_backend_unavailable(fake: FakeBackend, client: BackendClient,
                                                   status: int) -> None:
    fake.answer(*VALIDATE, status, {"error": "db at 10.1.2.3:5432 is down"})
    with pytest.raises(BackendUnavailable) as info:
        await client.validate_token(TOKEN)
    assert info.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert "10.1.2.3" not in info.value.message
    assert_safe(info.value.message, fake)


async def test_timeout_is_backend_unavailable_without_details(fake: FakeBackend) -> None:
    fake.answer(*VALIDATE, 200, BUZZCHAT_VALIDATE, hang=True)
    backend = await make_client(fake.url, timeout=0.2)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BackendUnavailable) as info:
            await backend.validate_token(TOKEN)
        assert loop.time() - started < 2.0
    finally:
        await backend.close()
    assert info.value.code is ErrorCode.BACKEND_UNAVAILABLE
    assert_safe(info.value.message, fake)
    assert_safe(str(info.value), fake)


async def test_connection_refused_is_backend_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = await make_client(f"http://127.0.0.1:{port}")
    try:
        for call in (backend.validate_token(TOKEN), backend.chat_members(1),
                     backend.send_message(TOKEN, 1, "x", None, None)):
            with pytest.raises(BackendUnavailable) as info:
                await call
            message = info.value.message
            assert "127.0.0.1" not in message and str(port) not in message
            assert "Errno" not in message and "Connect" not in message
    finally:
        await backend.close()


# --- members -------------------------------------------------------------------------------


async def test_members_buzzchat_shape(fake: FakeBackend, client: BackendClient) -> None:
    fake.answer(*MEMBERS, 200, BUZZCHAT_MEMBERS)
    assert await client.chat_members(1) == frozenset({1, 2})
    [seen] = fake.seen
    assert seen.headers.get("X-Internal-API-Key") == KEY
    assert "Authorization" not in seen.headers


async def test_members_404_is_invalid_chat(fake: FakeBackend, client: BackendClient) -> None:
    fake.answer(*MEMBERS, 404, {"error": "Chat not found"})
    with pytest.raises(ClientError) as info:
        await client.chat_members(1)
    assert info.value.code is ErrorCode.INVALID_CHAT


@pytest.mark.parametrize("status", [500, 502])
async def test_members_5xx_is_backend_unavailable(fake: FakeBackend, client: BackendClient,
                                                  status: int) -> None:
    fake.answer(*MEMBERS, status, {"error": "boom"})
    with pytest.raises(BackendUnavailable):
        await client.chat_members(1)


# --- user calls ----------------------------------------------------------------------------


async def test_send_message_returns_exact_body(fake: FakeBackend, client: BackendClient) -> None:
    fake.answer(*MESSAGES, 201, BUZZCHAT_MESSAGE)
    sent = await client.send_message(TOKEN, 1, "Hello back!", 7, [3, 4])
    assert isinstance(sent, SentMessage)
    assert (sent.id, sent.chat_id) == (124, 1)
    assert sent.raw == BUZZCHAT_MESSAGE
    [seen] = fake.seen
    assert seen.headers.get("Authorization") == f"Bearer {TOKEN}"
    assert "X-Internal-API-Key" not in seen.headers
    assert json.loads(seen.body) == {"chat_id": 1, "content": "Hello back!", "reply_to_id": 7,
                                     "attachment_ids": [3, 4]}


async def test_send_message_200_accepted_too(fake: FakeBackend, client: BackendClient) -> None:
    body = b'{"chat_id":1,"id":5}'
    fake.answer(*MESSAGES, 200, body)
    sent = await client.send_message(TOKEN, 1, "x", None, None)
    assert (sent.id, sent.raw) == (5, body)


async def test_reaction_and_read_calls(fake: FakeBackend, client: BackendClient) -> None:
    fake.answer(*REACTIONS, 201, {"ok": True})
    fake.answer(*READ, 200, {"ok": True})
    await client.add_reaction(TOKEN, 9, "👍")
    await client.mark_read(TOKEN, [1, 2])
    reaction, read = fake.seen
    assert (reaction.method, reaction.path) == REACTIONS
    assert json.loads(reaction.body) == {"emoji": "👍"}
    assert json.loads(read.body) == {"message_ids": [1, 2]}
    for seen in fake.seen:
        assert seen.headers.get("Authorization") == f"Bearer {TOKEN}"
        assert "X-Internal-API-Key" not in seen.headers


async def call(client: BackendClient, route: tuple[str, str]) -> None:
    if route == MESSAGES:
        await client.send_message(TOKEN, 1, "hi", None, None)
    elif route == REACTIONS:
        await client.add_reaction(TOKEN, 9, "x")
    else:
        await client.mark_read(TOKEN, [1])


USER_CALLS = [MESSAGES, REACTIONS, READ]


@pytest.mark.parametrize("route", USER_CALLS, ids=["send", "reaction", "read"])
async def test_user_call_401_is_auth_expired(fake: FakeBackend, client: BackendClient,
                                             route: tuple[str, str]) -> None:
    fake.answer(*route, 401, {"message": "JWT expired"})
    with pytest.raises(AuthExpired) as info:
        await call(client, route)
    assert info.value.code is ErrorCode.AUTH_EXPIRED


@pytest.mark.parametrize("route", USER_CALLS, ids=["send", "reaction", "read"])
@pytest.mark.parametrize(("status", "code"), [
    (403, ErrorCode.FORBIDDEN),
    (404, ErrorCode.NOT_FOUND),
    (400, ErrorCode.VALIDATION_FAILED),
    (422, ErrorCode.VALIDATION_FAILED),
])
async def test_user_call_rejections(fake: FakeBackend, client: BackendClient,
                                    route: tuple[str, str], status: int,
                                    code: ErrorCode) -> None:
    fake.answer(*route, status, {"message": "Nope, said the backend", "details": {"x": 1}})
    with pytest.raises(BackendRejected) as info:
        await call(client, route)
    assert info.value.code is code
    assert info.value.message.startswith("Failed to ")
    assert info.value.message.endswith(": Nope, said the backend")


async def test_send_message_403_message(fake: FakeBackend, client: BackendClient) -> None:
    fake.answer(*MESSAGES, 403, {"message": "Access denied to this chat"})
    with pytest.raises(BackendRejected) as info:
        await client.send_message(TOKEN, 1, "hi", None, None)
    assert info.value.code is ErrorCode.FORBIDDEN
    assert info.value.message == "Failed to send message: Access denied to this chat"


@pytest.mark.parametrize("route", USER_CALLS, ids=["send", "reaction", "read"])
@pytest.mark.parametrize("status", [500, 502, 504])
async def test_user_call_5xx_is_backend_unavailable(fake: FakeBackend, client: BackendClient,
                                                    route: tuple[str, str],
                                                    status: int) -> None:
    fake.answer(*route, status, b"<html>nginx 10.0.0.9</html>")
    with pytest.raises(BackendUnavailable) as info:
        await call(client, route)
    assert "10.0.0.9" not in info.value.message
    assert_safe(info.value.message, fake)
