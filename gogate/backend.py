"""The BuzzChat backend client: one pooled aiohttp session per worker, one method per call.

Every call goes to ``BACKEND_API_URL`` through one keep-alive :class:`aiohttp.TCPConnector`
(``BACKEND_MAX_CONNECTIONS``), bounded by ``BACKEND_TIMEOUT``. Answers are mapped to the client
error codes of the contract, carrying the backend's own reason; transport failures and 5xx become
:class:`~gogate.errors.BackendUnavailable` and never reveal addresses or exception text.

A message costs a backend call, so the session does only what the backend needs: no cookie jar
(the backend's cookies are never sent back), nothing asked or taken compressed, no headers
added by aiohttp, headers that do not change built once, the answer read as bytes and decoded
by msgspec (``bench/micro/test_backend_call.py`` measures a call against a bare
HTTP/1.1 client).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import msgspec

from gogate.errors import (
    AuthExpired,
    AuthFailed,
    BackendRejected,
    BackendUnavailable,
    ClientError,
    ErrorCode,
)
from gogate.log import backend_log
from gogate.models import SentMessage, User

__all__ = ["BackendClient", "SentMessage", "User", "member_ids", "parse_user"]


class _MessageIds(msgspec.Struct):
    id: int
    chat_id: int


class _ValidateReply(msgspec.Struct):
    valid: bool = False
    user: dict[str, Any] | None = None


class _MembersReply(msgspec.Struct):
    members: list[dict[str, Any]]


_decode_any: Final = msgspec.json.Decoder().decode
_decode_ids: Final = msgspec.json.Decoder(_MessageIds).decode
_decode_validate: Final = msgspec.json.Decoder(_ValidateReply).decode
_decode_members: Final = msgspec.json.Decoder(_MembersReply).decode
_encode: Final = msgspec.json.Encoder().encode

_REASON_LIMIT = 200


def parse_user(raw: dict[str, Any]) -> User:
    """Accept the shapes backends send: the name from ``name``, else ``full_name``, else
    ``first_name`` + ``last_name``; ``phone`` when present."""
    user_id = raw.get("id", raw.get("user_id"))
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise ValueError("user has no integer id")
    name = raw.get("name") or raw.get("full_name")
    if not isinstance(name, str) or not name.strip():
        parts = [raw.get("first_name"), raw.get("last_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    phone = raw.get("phone")
    return User(user_id, name.strip() or f"user {user_id}",
                phone if isinstance(phone, str) else None)


def member_ids(members: list[dict[str, Any]]) -> frozenset[int]:
    """The user ids of a member list: from ``user_id``, else ``id``, else ``userId``."""
    ids: set[int] = set()
    for member in members:
        for key in ("user_id", "id", "userId"):
            value = member.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                ids.add(value)
                break
    return frozenset(ids)


def _reason(body: bytes, fallback: str) -> str:
    """The backend's own reason (``message`` or ``error``), cleaned and bounded."""
    try:
        data = _decode_any(body)
    except msgspec.DecodeError:
        return fallback
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                text = "".join(ch if ch.isprintable() else " " for ch in value.strip())
                return text[:_REASON_LIMIT]
    return fallback


Observer = Callable[[str, str, float], None]
"""Called after every backend call with the endpoint, its outcome and its duration in seconds."""


class BackendClient:
    """One pooled session to the backend. Open with :meth:`start`, close with :meth:`close`."""

    def __init__(self, base_url: str, internal_api_key: str, *, timeout: float,
                 max_connections: int, observe: Observer | None = None) -> None:
        self._base = base_url.rstrip("/")
        common = {"Accept": "application/json", "User-Agent": "gogate"}
        # Headers that never change, built once (aiohttp copies what it is given).
        self._internal = {**common, "X-Internal-API-Key": internal_api_key}
        self._internal_json = {**self._internal, "Content-Type": "application/json"}
        self._user_json = {**common, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._observe = observe
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._max_connections,
            keepalive_timeout=60,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # Accept-Encoding is not sent: answers come plain
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, endpoint: str, method: str, path: str, *, token: str | None = None,
                    body: Any = None) -> tuple[int, bytes]:
        """One request; returns status and body, or raises BackendUnavailable."""
        session = self._session
        if session is None:
            raise BackendUnavailable("Backend unavailable")
        data = None if body is None else _encode(body)
        if token is not None:  # user calls always carry a body
            headers = {**self._user_json, "Authorization": f"Bearer {token}"}
        else:
            headers = self._internal if data is None else self._internal_json
        started = time.perf_counter()
        try:
            async with session.request(method, self._base + path, data=data,
                                       headers=headers) as response:
                payload = await response.read()
                status = response.status
        except TimeoutError:
            self._record(endpoint, "timeout", started)
            backend_log.warning("backend call timed out", extra={"endpoint": endpoint})
            raise BackendUnavailable("Backend unavailable: timed out") from None
        except aiohttp.ClientError as exc:
            self._record(endpoint, "unreachable", started)
            backend_log.warning("backend call failed: %s", type(exc).__name__,
                                extra={"endpoint": endpoint})
            raise BackendUnavailable("Backend unavailable") from None
        self._record(endpoint, str(status), started)
        if status >= 500:
            backend_log.warning("backend answered %d", status,
                                extra={"endpoint": endpoint, "status": status})
            raise BackendUnavailable("Backend unavailable")
        return status, payload

    def _record(self, endpoint: str, outcome: str, started: float) -> None:
        if self._observe is not None:
            self._observe(endpoint, outcome, time.perf_counter() - started)

    # --- the calls of the contract, section 5 --------------------------------------------

    async def validate_token(self, token: str) -> User:
        """Ask the backend who holds ``token``; raise AuthFailed when it refuses."""
        status, payload = await self._call("validate", "POST", "/api/internal/v1/auth/validate",
                                           body={"token": token})
        if status == 200:
            try:
                reply = _decode_validate(payload)
                if reply.valid and reply.user is not None:
                    return parse_user(reply.user)
            except (msgspec.DecodeError, ValueError):
                backend_log.error("backend sent an unreadable auth answer",
                                  extra={"endpoint": "validate"})
                raise BackendUnavailable("Backend unavailable: unreadable answer") from None
            raise AuthFailed("Authentication failed: invalid token")
        raise AuthFailed(f"Authentication failed: {_reason(payload, 'invalid token')}")

    async def chat_members(self, chat_id: int) -> frozenset[int]:
        """The user ids of the chat's members; INVALID_CHAT when the chat does not exist."""
        status, payload = await self._call("members", "GET",
                                           f"/api/internal/v1/chats/{chat_id}/members")
        if status == 404:
            raise ClientError("Chat not found", ErrorCode.INVALID_CHAT)
        if status != 200:
            backend_log.error("backend refused the member list: %s",
                              _reason(payload, f"status {status}"),
                              extra={"endpoint": "members", "status": status, "chat_id": chat_id})
            raise BackendUnavailable("Backend unavailable")
        try:
            return member_ids(_decode_members(payload).members)
        except msgspec.DecodeError:
            backend_log.error("backend sent an unreadable member list",
                              extra={"endpoint": "members", "chat_id": chat_id})
            raise BackendUnavailable("Backend unavailable: unreadable answer") from None

    async def send_message(self, token: str, chat_id: int, text: str | None,
                           reply_to_id: int | None, attachment_ids: list[int] | None
                           ) -> SentMessage:
        status, payload = await self._call(
            "send_message", "POST", "/api/v1/messages", token=token,
            body={"chat_id": chat_id, "content": text, "reply_to_id": reply_to_id,
                  "attachment_ids": attachment_ids})
        _raise_for_user_call(status, payload, "send message")
        try:
            ids = _decode_ids(payload)
        except msgspec.DecodeError:
            backend_log.error("backend accepted a message but its answer has no id/chat_id",
                              extra={"endpoint": "send_message", "chat_id": chat_id})
            raise BackendUnavailable("Backend unavailable: unreadable answer") from None
        return SentMessage(ids.id, ids.chat_id, payload)

    async def add_reaction(self, token: str, message_id: int, emoji: str) -> None:
        status, payload = await self._call(
            "add_reaction", "POST", f"/api/v1/messages/{message_id}/reactions", token=token,
            body={"emoji": emoji})
        _raise_for_user_call(status, payload, "add reaction")

    async def mark_read(self, token: str, message_ids: list[int]) -> None:
        status, payload = await self._call(
            "mark_read", "POST", "/api/v1/messages/read", token=token,
            body={"message_ids": message_ids})
        _raise_for_user_call(status, payload, "mark messages as read")


_STATUS_CODES: Final = {
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    400: ErrorCode.VALIDATION_FAILED,
    422: ErrorCode.VALIDATION_FAILED,
    429: ErrorCode.RATE_LIMITED,
}


def _raise_for_user_call(status: int, payload: bytes, action: str) -> None:
    """Map a user call's status to the contract's codes (5xx was handled by ``_call``)."""
    if 200 <= status < 300:
        return
    if status == 401:
        raise AuthExpired(f"Authentication expired: {_reason(payload, 'token refused')}")
    code = _STATUS_CODES.get(status, ErrorCode.VALIDATION_FAILED)
    raise BackendRejected(f"Failed to {action}: {_reason(payload, f'status {status}')}",
                          code, status)
