"""The business flows of the client events, as plain async functions.

Each flow gets the worker's :class:`Context`, the authenticated user with the token it presented,
and the decoded event. It returns the reply for the sender (an ``ack``), or None, and reports a
failure by raising :class:`~gogate.errors.ClientError`; :mod:`gogate.dispatch` writes both to the
connection. A flow never touches a connection: what it has to say to other users it publishes
through the broker, encoded once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import msgspec

from gogate.backend import BackendClient
from gogate.errors import BackendUnavailable, ClientError, ErrorCode
from gogate.events import (
    AddReaction,
    MarkRead,
    MessageReadData,
    NewReactionData,
    SendMessage,
    Typing,
    UserTypingData,
    encode,
    encode_ack,
)
from gogate.hub import Broker
from gogate.log import hub_log
from gogate.members import MembersCache
from gogate.metrics import Metrics
from gogate.models import User
from gogate.policy import RecentMessages, TypingGate

__all__ = ["Context", "add_reaction", "chat_members", "mark_read", "send_message", "typing",
           "typing_cached"]


class Context:
    """What the flows use, built once per worker by the server."""

    __slots__ = ("backend", "broker", "members", "metrics", "recent", "typing_gate")

    def __init__(self, backend: BackendClient, members: MembersCache, broker: Broker,
                 metrics: Metrics) -> None:
        self.backend = backend
        self.members = members
        self.broker = broker
        self.metrics = metrics
        self.recent = RecentMessages()
        self.typing_gate = TypingGate()


def _ack(ref: int | str | None, message_id: int | None = None) -> bytes | None:
    return None if ref is None else encode_ack(ref, message_id)


async def chat_members(ctx: Context, chat_id: int, user: User) -> frozenset[int]:
    """The members of a chat the user claims, checking that they are one of them."""
    if chat_id <= 0:
        raise ClientError("Invalid chat_id", ErrorCode.INVALID_CHAT)
    members = await ctx.members.get(chat_id)
    if user.id not in members:
        raise ClientError("Not a member of this chat", ErrorCode.NOT_A_MEMBER)
    return members


async def send_message(ctx: Context, user: User, token: str, event: SendMessage
                       ) -> bytes | None:
    data = event.data
    if data.chat_id <= 0:
        raise ClientError("Invalid chat_id", ErrorCode.INVALID_CHAT)
    sent = await ctx.backend.send_message(token, data.chat_id, data.text, data.reply_to_id,
                                          data.attachment_ids)
    ctx.recent.remember(sent.id, sent.chat_id)
    payload = encode("new_message", msgspec.Raw(sent.raw))
    try:
        members = await ctx.members.get(sent.chat_id, patient=True)
    except asyncio.CancelledError:
        # The worker stops while the member list is retried: the sender learns what became of
        # its message, and the flow ends here.
        raise BackendUnavailable(f"Message {sent.id} was saved but could not be delivered: "
                                 "server shutting down") from None
    except (BackendUnavailable, ClientError):
        ctx.metrics.undelivered.inc()
        hub_log.error("accepted message could not be delivered: member list unavailable",
                      extra={"chat_id": sent.chat_id, "message_id": sent.id,
                             "user_id": user.id})
        await _publish(ctx, (user.id,), "new_message", payload)
        raise BackendUnavailable(
            f"Message {sent.id} was saved but could not be delivered to the chat: "
            "member list unavailable") from None
    await _publish(ctx, members, "new_message", payload)
    return _ack(event.ref, sent.id)


async def _publish(ctx: Context, user_ids: Collection[int], event: str, payload: bytes) -> None:
    """Publish a stream event and wait until this worker has delivered it, so that the ack
    written next follows it on the sender's connections."""
    delivered = ctx.broker.publish(user_ids, event, payload, None, False)
    if delivered is not None:
        await delivered


async def typing(ctx: Context, user: User, token: str, event: Typing) -> bytes | None:
    members = await chat_members(ctx, event.data.chat_id, user)
    return typing_cached(ctx, user, event, members)


def typing_cached(ctx: Context, user: User, event: Typing, members: frozenset[int]
                  ) -> bytes | None:
    """Pass a typing state on to the chat's other members, at most once a second per state;
    it never waits, so it runs at once when the member list is at hand."""
    data = event.data
    if user.id not in members:
        raise ClientError("Not a member of this chat", ErrorCode.NOT_A_MEMBER)
    if ctx.typing_gate.allow(user.id, data.chat_id, data.is_typing):
        payload = encode("user_typing",
                         UserTypingData(data.chat_id, user.id, user.name, data.is_typing))
        ctx.broker.publish(members, "user_typing", payload, user.id, True)
    return _ack(event.ref)


async def _audience(ctx: Context, user: User, chat_id: int | None,
                    message_ids: list[int]) -> tuple[int | None, frozenset[int] | None]:
    """The chat an event about messages belongs to, and its members when that is known.
    A ``chat_id`` given by the client is checked for membership before the backend call."""
    if chat_id is not None:
        for message_id in message_ids:
            known = ctx.recent.chat_of(message_id)
            if known is not None and known != chat_id:
                raise ClientError(f"Message {message_id} is not in chat {chat_id}",
                                  ErrorCode.INVALID_PAYLOAD)
        return chat_id, await chat_members(ctx, chat_id, user)
    for message_id in message_ids:
        known = ctx.recent.chat_of(message_id)
        if known is not None:
            return known, None
    return None, None


async def _members_after_write(ctx: Context, user: User, chat_id: int | None,
                               members: frozenset[int] | None) -> frozenset[int]:
    """Who receives the result of a write the backend accepted: the chat's online members when
    the chat is known, else the acting user's own connections."""
    if members is not None:
        return members
    if chat_id is None:
        return frozenset((user.id,))
    try:
        found = await ctx.members.get(chat_id, patient=True)
    except (BackendUnavailable, ClientError):
        return frozenset((user.id,))
    return found if user.id in found else frozenset((user.id,))


async def add_reaction(ctx: Context, user: User, token: str, event: AddReaction
                       ) -> bytes | None:
    data = event.data
    chat_id, members = await _audience(ctx, user, data.chat_id, [data.message_id])
    await ctx.backend.add_reaction(token, data.message_id, data.emoji)
    audience = await _members_after_write(ctx, user, chat_id, members)
    payload = encode("new_reaction", NewReactionData(data.message_id, user.id, user.name,
                                                     data.emoji, chat_id))
    await _publish(ctx, audience, "new_reaction", payload)
    return _ack(event.ref)


async def mark_read(ctx: Context, user: User, token: str, event: MarkRead) -> bytes | None:
    data = event.data
    chat_id, members = await _audience(ctx, user, data.chat_id, data.message_ids)
    await ctx.backend.mark_read(token, data.message_ids)
    audience = await _members_after_write(ctx, user, chat_id, members)
    payload = encode("message_read", MessageReadData(data.message_ids, user.id, user.name,
                                                     chat_id))
    await _publish(ctx, audience, "message_read", payload)
    return _ack(event.ref)
