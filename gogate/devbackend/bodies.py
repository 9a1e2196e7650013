"""What the development backend accepts: every request body as a msgspec Struct.

A body that does not decode into its Struct is answered as the real backend answers an invalid
request: ``400 {"message": "Validation failed", "details": {field: reason}}``, naming the first
field at fault (``body`` when the body is not a JSON object at all). Rules that need the
database (does the chat exist, is the attachment yours) are the handlers' business.

With ``legacy_shapes`` the user API takes the bodies the original Go gateway sends instead
(the ``Legacy*`` Structs: camelCase names, the text as ``text``).
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar, cast

import msgspec
from aiohttp import web
from msgspec import Meta

from .replies import Fail, invalid

__all__ = [
    "AddMember",
    "CreateAttachment",
    "CreateChat",
    "CreateUser",
    "CreateUsers",
    "LegacyMarkRead",
    "LegacySendMessage",
    "MarkRead",
    "MintToken",
    "MintTokens",
    "React",
    "SendMessage",
    "SetFaults",
    "TokenBody",
    "decode",
    "decode_token",
    "path_id",
    "unique",
    "wire_name",
]

MAX_ID = 2**63 - 1  # SQLite's INTEGER range
MAX_TEXT = 4000  # characters in one message
MAX_ATTACHMENTS = 10  # per message
MAX_READ_BATCH = 100  # message ids in one read receipt
MAX_EMOJI = 32  # characters
MAX_BULK = 100_000  # users or tokens per bulk call
MAX_TTL = 10 * 365 * 86400.0  # seconds, either way
MAX_FAULT_DELAY = 3600.0  # seconds

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"\S")]
Ttl = Annotated[float, Meta(ge=-MAX_TTL, le=MAX_TTL)]

# --- the internal API -----------------------------------------------------------------------


class TokenBody(msgspec.Struct):
    token: str


# --- the user API ---------------------------------------------------------------------------


class SendMessage(msgspec.Struct):
    chat_id: Id
    content: Annotated[str, Meta(max_length=MAX_TEXT)] | None = None
    reply_to_id: Id | None = None
    attachment_ids: Annotated[list[Id], Meta(max_length=MAX_ATTACHMENTS)] | None = None


class LegacySendMessage(msgspec.Struct):
    """A message as the original Go gateway sends it: camelCase, the text as ``text``, every
    field present (``""``, ``null`` when the client gave none)."""

    chat_id: Id = msgspec.field(name="chatId")
    content: Annotated[str, Meta(max_length=MAX_TEXT)] | None = msgspec.field(default=None,
                                                                              name="text")
    reply_to_id: Id | None = msgspec.field(default=None, name="replyToId")
    attachment_ids: Annotated[list[Id], Meta(max_length=MAX_ATTACHMENTS)] | None = \
        msgspec.field(default=None, name="attachmentIds")


class React(msgspec.Struct):
    emoji: Annotated[str, Meta(min_length=1, max_length=MAX_EMOJI, pattern=r"\S")]


class MarkRead(msgspec.Struct):
    message_ids: Annotated[list[Id], Meta(min_length=1, max_length=MAX_READ_BATCH)]


class LegacyMarkRead(msgspec.Struct):
    """Read receipts as the original Go gateway sends them."""

    message_ids: Annotated[list[Id], Meta(min_length=1, max_length=MAX_READ_BATCH)] = \
        msgspec.field(name="messageIds")


# --- the development helpers ----------------------------------------------------------------


class CreateUser(msgspec.Struct):
    first_name: Name
    last_name: Name
    phone: str | None = None
    email: str | None = None
    is_active: bool = True


class CreateUsers(msgspec.Struct):
    count: Annotated[int, Meta(ge=1, le=MAX_BULK)]
    prefix: Annotated[str, Meta(min_length=1, max_length=32)] = "load"


class MintToken(msgspec.Struct):
    user_id: Id
    ttl: Ttl | None = None  # seconds; none: the backend's default


class MintTokens(msgspec.Struct):
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=MAX_BULK)]
    ttl: Ttl | None = None


class CreateChat(msgspec.Struct):
    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"\S")]
    member_ids: Annotated[list[Id], Meta(max_length=MAX_BULK)]


class AddMember(msgspec.Struct):
    user_id: Id


class CreateAttachment(msgspec.Struct):
    user_id: Id
    file_name: Annotated[str, Meta(min_length=1, max_length=255, pattern=r"\S")]
    size: Annotated[int, Meta(ge=0, le=MAX_ID)] = 0


class SetFaults(msgspec.Struct):
    delay: Annotated[float, Meta(ge=0, le=MAX_FAULT_DELAY)] = 0.0  # seconds before answering
    status: Annotated[int, Meta(ge=200, le=599)] | None = None  # none: answer normally
    match: Annotated[str, Meta(pattern="^/")] = "/api/v1/"  # path prefix the fault applies to
    count: Id | None = None  # requests it applies to; none: until cleared


# --- decoding -------------------------------------------------------------------------------

T = TypeVar("T")

_DECODERS: dict[type, msgspec.json.Decoder[object]] = {}
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_FIELD = re.compile(r"\.([^.\[`]+)")


def _decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return cast("msgspec.json.Decoder[T]", decoder)


def _detail(message: str) -> tuple[str, str]:
    """The field and reason of a msgspec validation message such as
    ``Expected `int` >= 1 - at `$.chat_id``` or ``Object missing required field `emoji```."""
    reason, _, path = message.partition(" - at `$")
    field = _FIELD.match(path)
    if field is not None:
        return field[1], reason
    missing = _MISSING.fullmatch(reason)
    if missing is not None:
        return missing[1], "is required"
    return "body", "must be a JSON object"


async def decode(request: web.Request, kind: type[T]) -> T:
    """The request's body as ``kind``, or a :class:`Fail` with the backend's 400 answer."""
    raw = await request.read()
    try:
        return _decoder(kind).decode(raw)
    except msgspec.ValidationError as exc:
        field, reason = _detail(str(exc))
        raise invalid({field: reason}) from None
    except msgspec.DecodeError:
        raise invalid({"body": "must be a JSON object"}) from None


async def decode_token(request: web.Request) -> str:
    """The token of an internal validation request, or the internal API's 400 answer."""
    try:
        return _decoder(TokenBody).decode(await request.read()).token
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        raise Fail(400, {"error": 'Request body must be {"token": string}'}) from None


def wire_name(kind: type[msgspec.Struct], field: str) -> str:
    """The name a field of ``kind`` has in JSON, for a refusal that names it."""
    for info in msgspec.structs.fields(kind):
        if info.name == field:
            return info.encode_name
    raise KeyError(field)


def path_id(request: web.Request, name: str) -> int | None:
    """A numeric path segment (the route guarantees digits), or None when out of range."""
    raw = request.match_info[name]
    if len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def unique(ids: list[int] | None) -> list[int]:
    """The ids once each, in the order first given."""
    return list(dict.fromkeys(ids or ()))
