"""The development helpers under ``/api/dev/`` (no authentication): create users, chats,
members, attachments and tokens, publish the tokens' public key, inject faults, and read
the call counts.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .bodies import (
    AddMember,
    CreateAttachment,
    CreateChat,
    CreateUser,
    CreateUsers,
    MintToken,
    MintTokens,
    SetFaults,
    decode,
    path_id,
    unique,
)
from .records import UnknownChat, UnknownUser
from .replies import Fail, attachment_json, invalid, json_response, user_json
from .state import CALL_NAMES, STATE, Fault

__all__ = ["add_member", "clear_faults", "create_attachment", "create_chat", "create_user",
           "create_users", "mint_token", "mint_tokens", "public_key", "remove_member",
           "reset_stats", "set_faults", "stats"]

log = logging.getLogger("gogate.devbackend")

# --- users and tokens -----------------------------------------------------------------------


async def create_user(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await decode(request, CreateUser)
    user = state.store.create_user(body.first_name, body.last_name, email=body.email,
                                   phone=body.phone, is_active=body.is_active)
    return json_response({"user": user_json(user), "token": state.issue(user.id)}, 201)


async def create_users(request: web.Request) -> web.Response:
    body = await decode(request, CreateUsers)
    ids = request.app[STATE].store.create_users(body.count, body.prefix)
    return json_response({"ids": ids}, 201)


async def mint_token(request: web.Request) -> web.Response:
    body = await decode(request, MintToken)
    # Any id is signed, known or not: a token for a missing user is how a test reaches the
    # backend's {"valid": false} answer.
    return json_response({"token": request.app[STATE].issue(body.user_id, body.ttl)})


async def mint_tokens(request: web.Request) -> web.Response:
    body = await decode(request, MintTokens)
    tokens = await request.app[STATE].issue_many(unique(body.user_ids), body.ttl)
    return json_response({"tokens": {str(i): token for i, token in tokens.items()}})


async def public_key(request: web.Request) -> web.Response:
    """The PEM of the key that verifies this backend's tokens (``JWT_PUBLIC_KEY``)."""
    return web.Response(body=request.app[STATE].signer.public_pem,
                        content_type="application/x-pem-file")


# --- chats, members and attachments ---------------------------------------------------------


async def create_chat(request: web.Request) -> web.Response:
    body = await decode(request, CreateChat)
    member_ids = unique(body.member_ids)
    try:
        chat_id = request.app[STATE].store.create_chat(body.name, member_ids)
    except UnknownUser:
        raise invalid({"member_ids": "contains an unknown user"}) from None
    return json_response({"id": chat_id, "name": body.name, "member_ids": sorted(member_ids)},
                         201)


async def add_member(request: web.Request) -> web.Response:
    chat_id = path_id(request, "chat_id")
    body = await decode(request, AddMember)
    try:
        if chat_id is None:
            raise UnknownChat(chat_id)
        request.app[STATE].store.add_member(chat_id, body.user_id)
    except UnknownChat:
        raise Fail(404, {"message": "Chat not found"}) from None
    except UnknownUser:
        raise Fail(404, {"message": "User not found"}) from None
    return web.Response(status=204)


async def remove_member(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    chat_id = path_id(request, "chat_id")
    user_id = path_id(request, "user_id")
    if chat_id is None or not store.chat_exists(chat_id):
        raise Fail(404, {"message": "Chat not found"})
    if user_id is not None:
        store.remove_member(chat_id, user_id)
    return web.Response(status=204)


async def create_attachment(request: web.Request) -> web.Response:
    body = await decode(request, CreateAttachment)
    try:
        attachment = request.app[STATE].store.create_attachment(body.user_id, body.file_name,
                                                                body.size)
    except UnknownUser:
        raise Fail(404, {"message": "User not found"}) from None
    return json_response({"owner_id": attachment.owner_id, **attachment_json(attachment)}, 201)


# --- faults and stats -----------------------------------------------------------------------


async def set_faults(request: web.Request) -> web.Response:
    body = await decode(request, SetFaults)
    request.app[STATE].fault = Fault(body.delay, body.status, body.match, body.count)
    log.info("fault injection on %s: delay %gs, status %s, count %s", body.match, body.delay,
             body.status, body.count)
    return web.Response(status=204)


async def clear_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.fault is not None:
        log.info("fault injection cleared")
    state.fault = None
    return web.Response(status=204)


async def stats(request: web.Request) -> web.Response:
    return json_response({"calls": request.app[STATE].calls})


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].calls = dict.fromkeys(CALL_NAMES, 0)
    return web.Response(status=204)
