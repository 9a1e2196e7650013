"""What the development backend answers: JSON responses, refusals, and the JSON shapes of its
records as the real BuzzChat backend writes them.

Refusals follow the real backend: ``{"error": str}`` on the internal API,
``{"message": str, "details"?: {field: reason}}`` everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from .records import Attachment, Message, Reaction, User

__all__ = ["Fail", "attachment_json", "invalid", "json_response", "member_json", "message_json",
           "reaction_json", "user_json"]

_ENCODER = msgspec.json.Encoder()


class Fail(Exception):
    """Ends a request with this status and JSON body."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(body), status=status,
                        content_type="application/json")


def invalid(details: Mapping[str, str]) -> Fail:
    """The real backend's answer to a request that breaks its validation rules."""
    return Fail(400, {"message": "Validation failed", "details": dict(details)})


def user_json(user: User) -> dict[str, Any]:
    """A user as the internal API's token validation returns it."""
    return {"id": user.id, "email": user.email, "phone": user.phone,
            "first_name": user.first_name, "last_name": user.last_name,
            "full_name": user.full_name, "roles": list(user.roles), "is_active": user.is_active}


def member_json(user: User) -> dict[str, Any]:
    """A chat member as the internal member list returns it."""
    return {"id": user.id, "full_name": user.full_name, "phone": user.phone}


def legacy_user_json(user: User) -> dict[str, Any]:
    """A validated user as the original Go gateway reads it: ``id``, ``name``, ``phone`` and
    ``active`` (``user_id`` too, the name its member lists use)."""
    return {"id": user.id, "user_id": user.id, "name": user.full_name, "phone": user.phone,
            "active": user.is_active}


def legacy_member_json(user: User) -> dict[str, Any]:
    """A chat member as the original Go gateway reads it: ``user_id`` and ``name``."""
    return {"user_id": user.id, "name": user.full_name, "phone": user.phone}


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {"id": attachment.id, "file_name": attachment.file_name, "size": attachment.size,
            "url": attachment.url}


def message_json(message: Message, sender: User, reply: Message | None,
                 reply_author: User | None, attachments: list[Attachment]) -> dict[str, Any]:
    """A message as the user API returns it when it is created."""
    reply_to = None
    if reply is not None:
        author_name = reply_author.full_name if reply_author is not None else None
        reply_to = {"id": reply.id, "text": reply.text,
                    "user": {"id": reply.user_id, "full_name": author_name}}
    return {
        "id": message.id,
        "chat_id": message.chat_id,
        "user": {"id": sender.id, "full_name": sender.full_name, "first_name": sender.first_name,
                 "last_name": sender.last_name, "phone": sender.phone},
        "type": "file" if attachments and message.text is None else "text",
        "text": message.text,
        "reply_to": reply_to,
        "attachments": [attachment_json(a) for a in attachments],
        "reactions": [],
        "read_count": 0,
        "mentions": None,
        "created_at": message.created_at,
        "edited_at": message.edited_at,
        "is_edited": message.edited_at is not None,
    }


def reaction_json(reaction: Reaction) -> dict[str, Any]:
    return {"message_id": reaction.message_id, "user_id": reaction.user_id,
            "emoji": reaction.emoji, "created_at": reaction.created_at}
