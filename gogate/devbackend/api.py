"""The calls gogate makes: the internal API (token validation, member lists) and the user API
(messages, reactions, read receipts), answered as the real BuzzChat backend answers them, or,
with ``legacy_shapes``, in the shapes the original Go gateway reads and sends.
"""

from __future__ import annotations

from aiohttp import web

from .bodies import (
    LegacyMarkRead,
    LegacySendMessage,
    MarkRead,
    React,
    SendMessage,
    decode,
    decode_token,
    path_id,
    unique,
    wire_name,
)
from .replies import (
    Fail,
    invalid,
    json_response,
    legacy_member_json,
    legacy_user_json,
    member_json,
    message_json,
    reaction_json,
    user_json,
)
from .state import STATE
from .tokens import TokenError, TokenExpired

__all__ = ["add_reaction", "mark_read", "members", "send_message", "validate"]

# --- internal API (X-Internal-API-Key) ------------------------------------------------------


async def validate(request: web.Request) -> web.Response:
    """``POST /api/internal/v1/auth/validate``: who holds this token."""
    state = request.app[STATE]
    state.check_key(request)
    token = await decode_token(request)
    try:
        user_id = state.identify(token)
    except TokenExpired:
        raise Fail(401, {"error": "Token expired"}) from None
    except TokenError:
        raise Fail(401, {"error": "Invalid token"}) from None
    user = state.store.get_user(user_id)
    if user is None or not user.is_active:
        return json_response({"valid": False})
    shape = legacy_user_json if state.legacy_shapes else user_json
    return json_response({"valid": True, "user": shape(user)})


async def members(request: web.Request) -> web.Response:
    """``GET /api/internal/v1/chats/{id}/members``: the chat's members, ordered by id."""
    state = request.app[STATE]
    state.check_key(request)
    chat_id = path_id(request, "chat_id")
    found = None if chat_id is None else state.store.members(chat_id)
    if found is None:
        raise Fail(404, {"error": "Chat not found"})
    shape = legacy_member_json if state.legacy_shapes else member_json
    return json_response({"chat_id": chat_id, "members": [shape(m) for m in found]})


# --- user API (Authorization: Bearer) -------------------------------------------------------


async def send_message(request: web.Request) -> web.Response:
    """``POST /api/v1/messages``: store a message from a member; answer it with 201."""
    state = request.app[STATE]
    store = state.store
    sender = state.caller(request)
    kind: type[SendMessage | LegacySendMessage] = (LegacySendMessage if state.legacy_shapes
                                                   else SendMessage)
    body = await decode(request, kind)
    attachment_ids = unique(body.attachment_ids)
    text = body.content if body.content is not None and body.content.strip() else None
    if text is None and not attachment_ids:
        raise invalid({wire_name(kind, "content"): "must not be blank"})

    if not store.chat_exists(body.chat_id):
        raise Fail(404, {"message": "Chat not found"})
    state.require_member(body.chat_id, sender.id)
    reply = None if body.reply_to_id is None else store.get_message(body.reply_to_id)
    if body.reply_to_id is not None and (reply is None or reply.chat_id != body.chat_id):
        raise invalid({wire_name(kind, "reply_to_id"): "no such message in this chat"})
    attachments = store.attachments(attachment_ids)
    if (len(attachments) != len(attachment_ids)
            or any(a.owner_id != sender.id for a in attachments)):
        raise invalid({wire_name(kind, "attachment_ids"): "unknown attachment or not yours"})

    message = store.create_message(body.chat_id, sender.id, text, body.reply_to_id,
                                   attachment_ids)
    author = None if reply is None else store.get_user(reply.user_id)
    return json_response(message_json(message, sender, reply, author, attachments), 201)


async def add_reaction(request: web.Request) -> web.Response:
    """``POST /api/v1/messages/{id}/reactions``: 201 for a new reaction, 200 for a repeat."""
    state = request.app[STATE]
    user = state.caller(request)
    message_id = path_id(request, "message_id")
    body = await decode(request, React)
    message = None if message_id is None else state.store.get_message(message_id)
    if message is None:
        raise Fail(404, {"message": "Message not found"})
    state.require_member(message.chat_id, user.id)
    reaction, created = state.store.add_reaction(message.id, user.id, body.emoji)
    return json_response(reaction_json(reaction), 201 if created else 200)


async def mark_read(request: web.Request) -> web.Response:
    """``POST /api/v1/messages/read``: record read receipts for messages of the caller's chats."""
    state = request.app[STATE]
    user = state.caller(request)
    kind: type[MarkRead | LegacyMarkRead] = LegacyMarkRead if state.legacy_shapes else MarkRead
    message_ids = unique((await decode(request, kind)).message_ids)
    chats = state.store.message_chats(message_ids)
    if len(chats) != len(message_ids):
        raise Fail(404, {"message": "Message not found"})
    for chat_id in set(chats.values()):
        state.require_member(chat_id, user.id)
    state.store.mark_read(message_ids, user.id)
    return json_response({"read": message_ids, "user_id": user.id})
