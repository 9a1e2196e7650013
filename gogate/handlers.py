"""The business flows of the client events, as plain async functions over :class:`Services`.

Each handler gets the connection and the decoded event. Writes (``send_message``,
``add_reaction``, ``mark_read``) run one at a time per connection, in arrival order; ``typing``
runs at once. A handler reports failure by raising :class:`~gogate.errors.ClientError`; the
connection turns it into an ``error`` event carrying the event's ``ref``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from gogate.config import Settings
from gogate.errors import AuthExpired, BackendUnavailable, ClientError, ErrorCode
from gogate.events import (
    AddReaction,
    Auth,
    AuthSuccessData,
    Inbound,
    MarkRead,
    MessageReadData,
    NewReactionData,
    SendMessage,
    Typing,
    UserTypingData,
    encode,
    encode_ack,
    encode_error,
)
from gogate.hub import Hub
from gogate.log import conn_log, hub_log
from gogate.members import MembersCache
from gogate.metrics import Metrics
from gogate.models import User

if TYPE_CHECKING:
    from gogate.backend import BackendClient

__all__ = ["Client", "RecentMessages", "Services", "TypingGate", "token_expiry"]

_TYPING_REPEAT: Final = 1.0  # seconds between broadcasts of the same typing state


class Client(Protocol):
    """What a handler needs of a connection."""

    conn_id: int
    user: User | None
    token: str | None

    def send(self, payload: bytes) -> None: ...

    def authenticated(self, user: User, token: str, expires_at: float | None) -> bool: ...

    def auth_failed(self) -> None: ...

    def token_refused(self) -> None: ...

    def refuse(self, limit: int) -> None: ...


class RecentMessages:
    """Chat ids of the messages this worker relayed, so that reactions and read receipts
    without a ``chat_id`` still reach the chat. Bounded; the oldest are forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._chats: dict[int, int] = {}
        self._capacity = capacity

    def remember(self, message_id: int, chat_id: int) -> None:
        chats = self._chats
        chats[message_id] = chat_id
        if len(chats) > self._capacity:
            del chats[next(iter(chats))]

    def chat_of(self, message_id: int) -> int | None:
        return self._chats.get(message_id)


class TypingGate:
    """Lets a typing state through at most once a second per user and chat; a change of state
    always passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: dict[tuple[int, int], tuple[bool, float]] = {}
        self._clock = clock

    def allow(self, user_id: int, chat_id: int, is_typing: bool) -> bool:
        now = self._clock()
        key = (user_id, chat_id)
        last = self._last.get(key)
        if last is not None and last[0] == is_typing and now - last[1] < _TYPING_REPEAT:
            return False
        self._last[key] = (is_typing, now)
        return True

    def prune(self) -> None:
        horizon = self._clock() - _TYPING_REPEAT
        for key in [k for k, (_, at) in self._last.items() if at < horizon]:
            del self._last[key]


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (the backend verifies), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return float(exp)
    return None


Handler = Callable[["Services", Client, Any], Awaitable[None]]


class Services:
    """Everything the handlers use, built once per worker by the server."""

    def __init__(self, settings: Settings, backend: BackendClient, members: MembersCache,
                 hub: Hub, metrics: Metrics) -> None:
        self.settings = settings
        self.backend = backend
        self.members = members
        self.hub = hub
        self.metrics = metrics
        self.recent = RecentMessages()
        self.typing_gate = TypingGate()
        self.tasks: set[asyncio.Task[None]] = set()
        self.handlers: dict[type[Inbound], Handler] = {
            Auth: handle_auth,
            SendMessage: handle_send_message,
            AddReaction: handle_add_reaction,
            MarkRead: handle_mark_read,
            Typing: handle_typing,
        }

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run an event's handler on its own, keeping the task until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, client: Client, event: Inbound) -> None:
        """Run one event's handler; answer its failure with an ``error`` event."""
        token = client.token
        try:
            if client.user is None and not isinstance(event, Auth):
                raise ClientError("Authentication required", ErrorCode.AUTH_REQUIRED)
            await self.handlers[type(event)](self, client, event)
        except ClientError as exc:
            if isinstance(exc, AuthExpired) and client.token == token:
                client.token_refused()  # unless a fresh auth replaced the refused token
            self.metrics.client_errors.labels(exc.code).inc()
            client.send(encode_error(exc.code, exc.message, event.ref))
        except Exception:
            conn_log.exception("event failed", extra={"conn_id": client.conn_id,
                                                      "event": type(event).__name__})
            self.metrics.client_errors.labels(ErrorCode.INTERNAL_ERROR).inc()
            client.send(encode_error(ErrorCode.INTERNAL_ERROR, "Internal error", event.ref))

    def typing_now(self, client: Client, event: Typing) -> bool:
        """Handle ``typing`` without waiting when the chat's member list is cached; ``False``
        when it has to wait for the list (then :meth:`handle` does it)."""
        members = self.members.fresh(event.data.chat_id)
        if members is None or event.data.chat_id <= 0:
            return False
        try:
            _broadcast_typing(self, client, event, members)
        except ClientError as exc:
            self.metrics.client_errors.labels(exc.code).inc()
            client.send(encode_error(exc.code, exc.message, event.ref))
        return True

    async def chat_members(self, chat_id: int, user: User, *, patient: bool = False
                           ) -> frozenset[int]:
        """The members of a chat the user claims, checking that they are one of them."""
        if chat_id <= 0:
            raise ClientError("Invalid chat_id", ErrorCode.INVALID_CHAT)
        members = await self.members.get(chat_id, patient=patient)
        if user.id not in members:
            raise ClientError("Not a member of this chat", ErrorCode.NOT_A_MEMBER)
        return members


def _ack(client: Client, ref: object, message_id: int | None = None) -> None:
    if ref is not None:
        client.send(encode_ack(ref, message_id))  # type: ignore[arg-type]


def _user(client: Client) -> tuple[User, str]:
    assert client.user is not None and client.token is not None
    return client.user, client.token


async def handle_auth(svc: Services, client: Client, event: Auth) -> None:
    token = event.data.token
    try:
        user = await svc.backend.validate_token(token)
    except ClientError as exc:
        if exc.code is ErrorCode.AUTH_FAILED:
            svc.metrics.client_errors.labels(exc.code).inc()
            client.send(encode_error(exc.code, exc.message, event.ref))
            client.auth_failed()
            return
        raise
    if client.user is not None and client.user.id != user.id:
        raise ClientError("Already authenticated as another user",
                          ErrorCode.ALREADY_AUTHENTICATED)
    if client.user is None:
        limit = svc.settings.max_connections_per_user
        if not await svc.hub.acquire(user.id, limit):
            client.refuse(limit)
            return
        if not client.authenticated(user, token, token_expiry(token)):
            svc.hub.release(user.id)  # closed while the slot was being acquired
            return
    elif not client.authenticated(user, token, token_expiry(token)):
        return
    client.send(encode("auth_success", AuthSuccessData(user.id, user.name, user.phone),
                       event.ref))


async def handle_send_message(svc: Services, client: Client, event: SendMessage) -> None:
    user, token = _user(client)
    data = event.data
    if data.chat_id <= 0:
        raise ClientError("Invalid chat_id", ErrorCode.INVALID_CHAT)
    sent = await svc.backend.send_message(token, data.chat_id, data.text, data.reply_to_id,
                                          data.attachment_ids)
    svc.recent.remember(sent.id, sent.chat_id)
    payload = encode("new_message", msgspec.Raw(sent.raw))
    try:
        members = await svc.members.get(sent.chat_id, patient=True)
    except asyncio.CancelledError:  # shutting down while the member list is retried
        client.send(encode_error(
            ErrorCode.BACKEND_UNAVAILABLE,
            f"Message {sent.id} was saved but could not be delivered: server shutting down",
            event.ref))
        raise
    except (BackendUnavailable, ClientError):
        svc.metrics.undelivered.inc()
        hub_log.error("accepted message could not be delivered: member list unavailable",
                      extra={"chat_id": sent.chat_id, "message_id": sent.id,
                             "user_id": user.id})
        svc.hub.publish((user.id,), "new_message", payload)
        raise BackendUnavailable(
            f"Message {sent.id} was saved but could not be delivered to the chat: "
            "member list unavailable") from None
    svc.hub.publish(members, "new_message", payload)
    _ack(client, event.ref, sent.id)


async def handle_typing(svc: Services, client: Client, event: Typing) -> None:
    user, _ = _user(client)
    members = await svc.chat_members(event.data.chat_id, user)
    _broadcast_typing(svc, client, event, members)


def _broadcast_typing(svc: Services, client: Client, event: Typing,
                      members: frozenset[int]) -> None:
    user, _ = _user(client)
    data = event.data
    if user.id not in members:
        raise ClientError("Not a member of this chat", ErrorCode.NOT_A_MEMBER)
    if svc.typing_gate.allow(user.id, data.chat_id, data.is_typing):
        payload = encode("user_typing",
                         UserTypingData(data.chat_id, user.id, user.name, data.is_typing))
        svc.hub.publish(members, "user_typing", payload, exclude_user=user.id, droppable=True)
    _ack(client, event.ref)


async def _audience(svc: Services, user: User, chat_id: int | None,
                    message_ids: list[int]) -> tuple[int | None, frozenset[int] | None]:
    """The chat an event about messages belongs to, and its members when that is known.
    A ``chat_id`` given by the client is checked for membership before the backend call."""
    if chat_id is not None:
        for message_id in message_ids:
            known = svc.recent.chat_of(message_id)
            if known is not None and known != chat_id:
                raise ClientError(f"Message {message_id} is not in chat {chat_id}",
                                  ErrorCode.INVALID_PAYLOAD)
        return chat_id, await svc.chat_members(chat_id, user)
    for message_id in message_ids:
        known = svc.recent.chat_of(message_id)
        if known is not None:
            return known, None
    return None, None


async def _members_after_write(svc: Services, user: User, chat_id: int | None,
                               members: frozenset[int] | None) -> frozenset[int]:
    """Who receives the result of a write the backend accepted: the chat's online members when
    the chat is known, else the acting user's own connections."""
    if members is not None:
        return members
    if chat_id is None:
        return frozenset((user.id,))
    try:
        found = await svc.members.get(chat_id, patient=True)
    except (BackendUnavailable, ClientError):
        return frozenset((user.id,))
    return found if user.id in found else frozenset((user.id,))


async def handle_add_reaction(svc: Services, client: Client, event: AddReaction) -> None:
    user, token = _user(client)
    data = event.data
    chat_id, members = await _audience(svc, user, data.chat_id, [data.message_id])
    await svc.backend.add_reaction(token, data.message_id, data.emoji)
    audience = await _members_after_write(svc, user, chat_id, members)
    payload = encode("new_reaction", NewReactionData(data.message_id, user.id, user.name,
                                                     data.emoji, chat_id))
    svc.hub.publish(audience, "new_reaction", payload)
    _ack(client, event.ref)


async def handle_mark_read(svc: Services, client: Client, event: MarkRead) -> None:
    user, token = _user(client)
    data = event.data
    chat_id, members = await _audience(svc, user, data.chat_id, data.message_ids)
    await svc.backend.mark_read(token, data.message_ids)
    audience = await _members_after_write(svc, user, chat_id, members)
    payload = encode("message_read", MessageReadData(data.message_ids, user.id, user.name,
                                                     chat_id))
    svc.hub.publish(audience, "message_read", payload)
    _ack(client, event.ref)
