"""The development backend: the BuzzChat backend API that gogate calls, kept in SQLite.

For development and tests only. It has no real login (tokens are minted by ``/api/dev/``
endpoints that anyone can call) and must never face a network other than your own machine.

Routes::

    internal (X-Internal-API-Key)       POST /api/internal/v1/auth/validate
                                        GET  /api/internal/v1/chats/{id}/members
    user API (Authorization: Bearer)    POST /api/v1/messages
                                        POST /api/v1/messages/{id}/reactions
                                        POST /api/v1/messages/read
    development helpers (no auth)       POST /api/dev/users, /api/dev/users/bulk
                                        POST /api/dev/tokens, /api/dev/tokens/bulk
                                        POST /api/dev/chats, /api/dev/chats/{id}/members
                                        DELETE /api/dev/chats/{id}/members/{user_id}
                                        POST /api/dev/attachments
                                        PUT|DELETE /api/dev/faults
                                        GET|DELETE /api/dev/stats

Errors follow the real backend: ``{"error": str}`` on the internal API,
``{"message": str, "details"?: {field: reason}}`` everywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from .demo import DEMO_USERS, seed
from .store import Attachment, Message, Store, UnknownChat, UnknownUser, User
from .tokens import TokenError, TokenExpired, issue_token, verify_token

__all__ = ["CALL_NAMES", "DevBackend", "create_app"]

log = logging.getLogger("gogate.devbackend")

#: The backend calls gogate makes, as counted by ``GET /api/dev/stats``.
CALL_NAMES = ("validate", "members", "send_message", "add_reaction", "mark_read")

MAX_ID = 2**63 - 1  # SQLite's INTEGER range
MAX_TEXT = 4000  # characters in one message
MAX_ATTACHMENTS = 10  # per message
MAX_READ_BATCH = 100  # message ids in one read receipt
MAX_EMOJI = 32  # characters
MAX_BULK = 100_000  # users or tokens per bulk call
MAX_TTL = 10 * 365 * 86400.0  # seconds, either way
MAX_FAULT_DELAY = 3600.0  # seconds

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Fail(Exception):
    """Ends a request with this status and JSON body."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class _Fault(msgspec.Struct):
    delay: float
    status: int | None
    match: str
    remaining: int | None


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(body), status=status, content_type="application/json")


def _invalid(details: Mapping[str, str]) -> _Fail:
    return _Fail(400, {"message": "Validation failed", "details": dict(details)})


def _is_id(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_ID


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _path_id(request: web.Request, name: str) -> int | None:
    """A numeric path segment (the route guarantees digits), or None when out of range."""
    raw = request.match_info[name]
    if len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


async def _body(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None if it is anything else."""
    try:
        value = _DECODER.decode(await request.read())
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


async def _object(request: web.Request) -> dict[str, Any]:
    body = await _body(request)
    if body is None:
        raise _invalid({"body": "must be a JSON object"})
    return body


def _string(body: Mapping[str, Any], field: str, details: dict[str, str], limit: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        details[field] = "must be a non-empty string"
        return ""
    if len(value) > limit:
        details[field] = f"must be at most {limit} characters"
    return value


def _optional_string(body: Mapping[str, Any], field: str, details: dict[str, str]) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        details[field] = "must be a string or null"
        return None
    return value


def _ttl(body: Mapping[str, Any], default: float, details: dict[str, str]) -> float:
    value = body.get("ttl", default)
    if value is None:
        return default
    if not _is_number(value) or abs(value) > MAX_TTL:
        details["ttl"] = "must be a number of seconds"
        return default
    return float(value)


def _int(
    body: Mapping[str, Any],
    field: str,
    details: dict[str, str],
    *,
    low: int = 1,
    high: int = MAX_ID,
    default: int | None = None,
) -> int:
    """An integer field in ``low..high`` (positive id by default); a failure goes to details."""
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        details[field] = (
            "must be a positive integer"
            if (low, high) == (1, MAX_ID)
            else f"must be an integer in {low}..{high}"
        )
        return low
    return value


def _id_list(
    body: Mapping[str, Any], field: str, details: dict[str, str], *, min_len: int, max_len: int
) -> list[int]:
    value = body.get(field)
    if (
        not isinstance(value, list)
        or not min_len <= len(value) <= max_len
        or not all(_is_id(item) for item in value)
    ):
        details[field] = f"must be a list of {min_len}..{max_len} positive integers"
        return []
    return list(dict.fromkeys(value))


def _user_json(user: User) -> dict[str, Any]:
    """A user as the internal API's token validation returns it."""
    return {
        "id": user.id,
        "email": user.email,
        "phone": user.phone,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "full_name": user.full_name,
        "roles": list(user.roles),
        "is_active": user.is_active,
    }


def _attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "file_name": attachment.file_name,
        "size": attachment.size,
        "url": attachment.url,
    }


class _Api:
    """The routes' handlers and middlewares, sharing one store and the fault and call state."""

    def __init__(self, store: Store, internal_api_key: str, token_ttl: float) -> None:
        self.store = store
        self.key = internal_api_key.encode()
        self.token_ttl = token_ttl
        self.fault: _Fault | None = None
        self.calls = dict.fromkeys(CALL_NAMES, 0)

    # middlewares, outermost first

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = "error" if request.path.startswith("/api/internal/") else "message"
        try:
            return await handler(request)
        except _Fail as fail:
            return _json(fail.body, fail.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _json({key: exc.reason}, exc.status)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return _json({key: "Internal server error"}, 500)

    @web.middleware
    async def count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name
        if name in self.calls:
            self.calls[name] += 1
        return await handler(request)

    @web.middleware
    async def inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.fault
        path = request.path
        if fault is None or path.startswith("/api/dev/") or not path.startswith(fault.match):
            return await handler(request)
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0 and self.fault is fault:
                self.fault = None
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return await handler(request)
        key = "error" if path.startswith("/api/internal/") else "message"
        return _json({key: "Injected failure"}, fault.status)

    # authentication

    def _check_key(self, request: web.Request) -> None:
        given = request.headers.get("X-Internal-API-Key")
        try:
            ok = given is not None and hmac.compare_digest(given.encode(), self.key)
        except UnicodeEncodeError:
            ok = False
        if not ok:
            raise _Fail(403, {"error": "Invalid API key"})

    def _caller(self, request: web.Request) -> User:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Fail(401, {"message": "Unauthorized"})
        try:
            user_id = verify_token(self.store.jwt_secret, token)
        except TokenExpired:
            raise _Fail(401, {"message": "Unauthorized", "details": {"token": "expired"}}) from None
        except TokenError:
            raise _Fail(401, {"message": "Unauthorized", "details": {"token": "invalid"}}) from None
        user = self.store.get_user(user_id)
        if user is None or not user.is_active:
            raise _Fail(401, {"message": "Unauthorized", "details": {"token": "unknown user"}})
        return user

    def _require_member(self, chat_id: int, user_id: int) -> None:
        if not self.store.is_member(chat_id, user_id):
            raise _Fail(403, {"message": "Access denied to this chat"})

    # internal API

    async def validate(self, request: web.Request) -> web.Response:
        self._check_key(request)
        body = await _body(request)
        token = None if body is None else body.get("token")
        if not isinstance(token, str):
            raise _Fail(400, {"error": 'Request body must be {"token": string}'})
        try:
            user_id = verify_token(self.store.jwt_secret, token)
        except TokenExpired:
            raise _Fail(401, {"error": "Token expired"}) from None
        except TokenError:
            raise _Fail(401, {"error": "Invalid token"}) from None
        user = self.store.get_user(user_id)
        if user is None or not user.is_active:
            return _json({"valid": False})
        return _json({"valid": True, "user": _user_json(user)})

    async def members(self, request: web.Request) -> web.Response:
        self._check_key(request)
        chat_id = _path_id(request, "chat_id")
        members = None if chat_id is None else self.store.members(chat_id)
        if members is None:
            raise _Fail(404, {"error": "Chat not found"})
        return _json(
            {
                "chat_id": chat_id,
                "members": [
                    {"id": m.id, "full_name": m.full_name, "phone": m.phone} for m in members
                ],
            }
        )

    # user API

    async def send_message(self, request: web.Request) -> web.Response:
        sender = self._caller(request)
        body = await _object(request)
        details: dict[str, str] = {}
        chat_id = _int(body, "chat_id", details)
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            details["content"] = "must be a string or null"
        elif content is not None and len(content) > MAX_TEXT:
            details["content"] = f"must be at most {MAX_TEXT} characters"
        reply_to_id = None
        if body.get("reply_to_id") is not None:
            reply_to_id = _int(body, "reply_to_id", details)
        attachment_ids: list[int] = []
        if body.get("attachment_ids") is not None:
            attachment_ids = _id_list(
                body, "attachment_ids", details, min_len=0, max_len=MAX_ATTACHMENTS
            )
        text = content if isinstance(content, str) and content.strip() else None
        if not details and text is None and not attachment_ids:
            details["content"] = "must not be blank"
        if details:
            raise _invalid(details)

        if not self.store.chat_exists(chat_id):
            raise _Fail(404, {"message": "Chat not found"})
        self._require_member(chat_id, sender.id)
        reply = None if reply_to_id is None else self.store.get_message(reply_to_id)
        if reply_to_id is not None and (reply is None or reply.chat_id != chat_id):
            raise _invalid({"reply_to_id": "no such message in this chat"})
        attachments = self.store.attachments(attachment_ids)
        if len(attachments) != len(attachment_ids) or any(
            a.owner_id != sender.id for a in attachments
        ):
            raise _invalid({"attachment_ids": "unknown attachment or not yours"})

        message = self.store.create_message(chat_id, sender.id, text, reply_to_id, attachment_ids)
        return _json(self._message_json(message, sender, reply, attachments), 201)

    def _message_json(
        self,
        message: Message,
        sender: User,
        reply: Message | None,
        attachments: list[Attachment],
    ) -> dict[str, Any]:
        reply_to = None
        if reply is not None:
            author = self.store.get_user(reply.user_id)
            reply_to = {
                "id": reply.id,
                "text": reply.text,
                "user": {
                    "id": reply.user_id,
                    "full_name": author.full_name if author is not None else None,
                },
            }
        return {
            "id": message.id,
            "chat_id": message.chat_id,
            "user": {
                "id": sender.id,
                "full_name": sender.full_name,
                "first_name": sender.first_name,
                "last_name": sender.last_name,
                "phone": sender.phone,
            },
            "type": "file" if attachments and message.text is None else "text",
            "text": message.text,
            "reply_to": reply_to,
            "attachments": [_attachment_json(a) for a in attachments],
            "reactions": [],
            "read_count": 0,
            "mentions": None,
            "created_at": message.created_at,
            "edited_at": message.edited_at,
            "is_edited": message.edited_at is not None,
        }

    async def add_reaction(self, request: web.Request) -> web.Response:
        user = self._caller(request)
        message_id = _path_id(request, "message_id")
        body = await _object(request)
        emoji = body.get("emoji")
        if not isinstance(emoji, str) or not emoji.strip() or len(emoji) > MAX_EMOJI:
            raise _invalid({"emoji": f"must be a string of 1..{MAX_EMOJI} characters"})
        message = None if message_id is None else self.store.get_message(message_id)
        if message is None:
            raise _Fail(404, {"message": "Message not found"})
        self._require_member(message.chat_id, user.id)
        reaction, created = self.store.add_reaction(message.id, user.id, emoji)
        return _json(
            {
                "message_id": reaction.message_id,
                "user_id": reaction.user_id,
                "emoji": reaction.emoji,
                "created_at": reaction.created_at,
            },
            201 if created else 200,
        )

    async def mark_read(self, request: web.Request) -> web.Response:
        user = self._caller(request)
        body = await _object(request)
        details: dict[str, str] = {}
        message_ids = _id_list(body, "message_ids", details, min_len=1, max_len=MAX_READ_BATCH)
        if details:
            raise _invalid(details)
        chats = self.store.message_chats(message_ids)
        if len(chats) != len(message_ids):
            raise _Fail(404, {"message": "Message not found"})
        for chat_id in set(chats.values()):
            self._require_member(chat_id, user.id)
        self.store.mark_read(message_ids, user.id)
        return _json({"read": message_ids, "user_id": user.id})

    # development helpers

    async def dev_create_user(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        first_name = _string(body, "first_name", details, 100)
        last_name = _string(body, "last_name", details, 100)
        phone = _optional_string(body, "phone", details)
        email = _optional_string(body, "email", details)
        is_active = body.get("is_active", True)
        if not isinstance(is_active, bool):
            details["is_active"] = "must be a boolean"
        if details:
            raise _invalid(details)
        user = self.store.create_user(
            first_name, last_name, email=email, phone=phone, is_active=is_active
        )
        token = issue_token(self.store.jwt_secret, user.id, self.token_ttl)
        return _json({"user": _user_json(user), "token": token}, 201)

    async def dev_create_users(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        count = _int(body, "count", details, high=MAX_BULK)
        prefix = body.get("prefix", "load")
        if not isinstance(prefix, str) or not 1 <= len(prefix) <= 32:
            details["prefix"] = "must be a string of 1..32 characters"
        if details:
            raise _invalid(details)
        ids = self.store.create_users(count, prefix)
        return _json({"ids": ids}, 201)

    async def dev_token(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        user_id = _int(body, "user_id", details)
        ttl = _ttl(body, self.token_ttl, details)
        if details:
            raise _invalid(details)
        # Any id is signed, known or not: a token for a missing user is how a test
        # reaches the backend's {"valid": false} answer.
        return _json({"token": issue_token(self.store.jwt_secret, user_id, ttl)})

    async def dev_tokens(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        user_ids = _id_list(body, "user_ids", details, min_len=1, max_len=MAX_BULK)
        ttl = _ttl(body, self.token_ttl, details)
        if details:
            raise _invalid(details)
        secret = self.store.jwt_secret
        return _json({"tokens": {str(i): issue_token(secret, i, ttl) for i in user_ids}})

    async def dev_create_chat(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        name = _string(body, "name", details, 200)
        member_ids = _id_list(body, "member_ids", details, min_len=0, max_len=MAX_BULK)
        if details:
            raise _invalid(details)
        try:
            chat_id = self.store.create_chat(name, member_ids)
        except UnknownUser:
            raise _invalid({"member_ids": "contains an unknown user"}) from None
        return _json({"id": chat_id, "name": name, "member_ids": sorted(member_ids)}, 201)

    async def dev_add_member(self, request: web.Request) -> web.Response:
        chat_id = _path_id(request, "chat_id")
        body = await _object(request)
        details: dict[str, str] = {}
        user_id = _int(body, "user_id", details)
        if details:
            raise _invalid(details)
        try:
            if chat_id is None:
                raise UnknownChat(chat_id)
            self.store.add_member(chat_id, user_id)
        except UnknownChat:
            raise _Fail(404, {"message": "Chat not found"}) from None
        except UnknownUser:
            raise _Fail(404, {"message": "User not found"}) from None
        return web.Response(status=204)

    async def dev_remove_member(self, request: web.Request) -> web.Response:
        chat_id = _path_id(request, "chat_id")
        user_id = _path_id(request, "user_id")
        if chat_id is None or not self.store.chat_exists(chat_id):
            raise _Fail(404, {"message": "Chat not found"})
        if user_id is not None:
            self.store.remove_member(chat_id, user_id)
        return web.Response(status=204)

    async def dev_create_attachment(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        user_id = _int(body, "user_id", details)
        file_name = _string(body, "file_name", details, 255)
        size = _int(body, "size", details, low=0, default=0)
        if details:
            raise _invalid(details)
        try:
            attachment = self.store.create_attachment(user_id, file_name, size)
        except UnknownUser:
            raise _Fail(404, {"message": "User not found"}) from None
        return _json({"owner_id": attachment.owner_id, **_attachment_json(attachment)}, 201)

    async def dev_set_faults(self, request: web.Request) -> web.Response:
        body = await _object(request)
        details: dict[str, str] = {}
        delay = body.get("delay", 0)
        if not _is_number(delay) or not 0 <= delay <= MAX_FAULT_DELAY:
            details["delay"] = f"must be a number of seconds in 0..{MAX_FAULT_DELAY:g}"
        status = None
        if body.get("status") is not None:
            status = _int(body, "status", details, low=200, high=599)
        match = body.get("match", "/api/v1/")
        if not isinstance(match, str) or not match.startswith("/"):
            details["match"] = "must be a path prefix starting with /"
        count = None
        if body.get("count") is not None:
            count = _int(body, "count", details)
        if details:
            raise _invalid(details)
        self.fault = _Fault(float(delay), status, match, count)
        log.info(
            "fault injection on %s: delay %gs, status %s, count %s", match, delay, status, count
        )
        return web.Response(status=204)

    async def dev_clear_faults(self, request: web.Request) -> web.Response:
        if self.fault is not None:
            log.info("fault injection cleared")
        self.fault = None
        return web.Response(status=204)

    async def dev_stats(self, request: web.Request) -> web.Response:
        return _json({"calls": self.calls})

    async def dev_reset_stats(self, request: web.Request) -> web.Response:
        self.calls = dict.fromkeys(CALL_NAMES, 0)
        return web.Response(status=204)


def create_app(
    store: Store, internal_api_key: str, *, token_ttl: float = 86400.0
) -> web.Application:
    """The development backend's application over ``store``.

    ``internal_api_key`` guards the internal API; ``token_ttl`` is the lifetime in seconds of
    tokens minted by ``/api/dev/`` when the request names none.
    """
    api = _Api(store, internal_api_key, token_ttl)
    app = web.Application(middlewares=[api.errors, api.count, api.inject_faults])
    r = app.router
    r.add_post("/api/internal/v1/auth/validate", api.validate, name="validate")
    r.add_get(r"/api/internal/v1/chats/{chat_id:\d+}/members", api.members, name="members")
    r.add_post("/api/v1/messages", api.send_message, name="send_message")
    r.add_post("/api/v1/messages/read", api.mark_read, name="mark_read")
    r.add_post(
        r"/api/v1/messages/{message_id:\d+}/reactions", api.add_reaction, name="add_reaction"
    )
    r.add_post("/api/dev/users", api.dev_create_user)
    r.add_post("/api/dev/users/bulk", api.dev_create_users)
    r.add_post("/api/dev/tokens", api.dev_token)
    r.add_post("/api/dev/tokens/bulk", api.dev_tokens)
    r.add_post("/api/dev/chats", api.dev_create_chat)
    r.add_post(r"/api/dev/chats/{chat_id:\d+}/members", api.dev_add_member)
    r.add_delete(r"/api/dev/chats/{chat_id:\d+}/members/{user_id:\d+}", api.dev_remove_member)
    r.add_post("/api/dev/attachments", api.dev_create_attachment)
    r.add_put("/api/dev/faults", api.dev_set_faults)
    r.add_delete("/api/dev/faults", api.dev_clear_faults)
    r.add_get("/api/dev/stats", api.dev_stats)
    r.add_delete("/api/dev/stats", api.dev_reset_stats)
    return app


class DevBackend:
    """The development backend served on ``host:port`` inside the running event loop.

    ``port=0`` picks a free port; :meth:`start` returns the base URL with the real one.
    Without ``db_path`` the data lives in a fresh temporary file removed by :meth:`stop`.
    A store that is empty gets the demo users and chats of :mod:`gogate.devbackend.demo`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        db_path: str | None = None,
        internal_api_key: str = "dev-internal-key",
        token_ttl: float = 86400.0,
        *,
        access_log: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.internal_api_key = internal_api_key
        self.token_ttl = token_ttl
        self._access_log = access_log
        self._temp_path: str | None = None
        if db_path is None:
            fd, db_path = tempfile.mkstemp(prefix="gogate-dev-", suffix=".sqlite3")
            os.close(fd)
            self._temp_path = db_path
        self.db_path = db_path
        self.store = Store(db_path)
        seed(self.store)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._tokens: dict[int, str] | None = None

    def tokens(self) -> dict[int, str]:
        """A token per demo user present in the store, living ``token_ttl`` seconds."""
        if self._tokens is None:
            self._tokens = {
                user_id: issue_token(self.store.jwt_secret, user_id, self.token_ttl)
                for user_id, *_ in DEMO_USERS
                if self.store.get_user(user_id) is not None
            }
        return dict(self._tokens)

    async def start(self) -> str:
        """Listen and return the base URL, e.g. ``http://127.0.0.1:8000``."""
        app = create_app(self.store, self.internal_api_key, token_ttl=self.token_ttl)
        runner = web.AppRunner(
            app, access_log=log if self._access_log else None, handle_signals=False
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        log.info("development backend on %s, database %s", self.url, self.db_path)
        return self.url

    async def stop(self) -> None:
        """Stop serving, close the database and remove it if it was temporary."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.close()
        if self._temp_path is not None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self._temp_path + suffix)
            self._temp_path = None

    async def __aenter__(self) -> DevBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
