"""Every wire event as a msgspec Struct, and the one decoder and encoder of the gateway.

Inbound frames are ``{"event": <name>, "data": {...}, "ref": <str|int>?}``; the event name is the
tag of a tagged union, so one decode validates the whole frame. Outbound events are
:class:`Outbound` values; ``new_message`` carries the backend's JSON as :class:`msgspec.Raw`.
A stream event's frame also carries its receiver's top-level ``offset``, which the fan-out
splices in per user (:func:`gogate_fast.build_frame`): it is encoded here without one.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from gogate.errors import ClientError, ErrorCode

__all__ = [
    "CLIENT_EVENTS",
    "EVENT_NAMES",
    "AddReaction",
    "AddReactionData",
    "Auth",
    "AuthData",
    "AuthSuccessData",
    "ErrorData",
    "Inbound",
    "MarkRead",
    "MarkReadData",
    "MessageReadData",
    "NewReactionData",
    "Outbound",
    "SendMessage",
    "SendMessageData",
    "StreamPosition",
    "Typing",
    "TypingData",
    "UserTypingData",
    "decode_inbound",
    "encode",
]

PositiveInt = Annotated[int, Meta(gt=0)]
Ref = int | str | None

# --- client → server ------------------------------------------------------------------------


class StreamPosition(Struct):
    """A place in a user's stream (``auth.data.since``, ``auth_success.data.stream``,
    ``stream_reset.data``): the stream's epoch and an offset in it."""

    epoch: str
    offset: Annotated[int, Meta(ge=0, le=2**63 - 1)]


class AuthData(Struct):
    token: Annotated[str, Meta(min_length=1)]
    since: StreamPosition | None = None  # the last stream event the client processed


class SendMessageData(Struct):
    chat_id: int
    text: str | None = None
    reply_to_id: PositiveInt | None = None
    attachment_ids: list[PositiveInt] | None = None


class TypingData(Struct):
    chat_id: int
    is_typing: bool


class AddReactionData(Struct):
    message_id: PositiveInt
    emoji: Annotated[str, Meta(min_length=1, max_length=64)]
    chat_id: int | None = None


class MarkReadData(Struct):
    message_ids: Annotated[list[PositiveInt], Meta(min_length=1, max_length=100)]
    chat_id: int | None = None


class _Frame(Struct, tag_field="event", kw_only=True):
    ref: Ref = None


class Auth(_Frame, tag="auth"):
    data: AuthData


class SendMessage(_Frame, tag="send_message"):
    data: SendMessageData


class Typing(_Frame, tag="typing"):
    data: TypingData


class AddReaction(_Frame, tag="add_reaction"):
    data: AddReactionData


class MarkRead(_Frame, tag="mark_read"):
    data: MarkReadData


Inbound = Auth | SendMessage | Typing | AddReaction | MarkRead

EVENT_NAMES: Final[dict[type[Inbound], str]] = {
    cls: str(cls.__struct_config__.tag)
    for cls in (Auth, SendMessage, Typing, AddReaction, MarkRead)
}
CLIENT_EVENTS: Final = frozenset(EVENT_NAMES.values())


class _Envelope(Struct):
    """Just enough of a frame to say what was wrong with it."""

    event: Any = None
    ref: Any = None


_inbound_decoder: Final = msgspec.json.Decoder(Inbound)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


class InvalidFrame(ClientError):
    """A frame that does not decode; ``event`` and ``ref`` are set when they could be read."""

    def __init__(self, message: str, code: ErrorCode, event: str | None, ref: Ref) -> None:
        super().__init__(message, code)
        self.event = event
        self.ref = ref


def decode_inbound(payload: bytes | str) -> Inbound:
    """Decode and validate one client frame, or raise :class:`InvalidFrame` with its code."""
    try:
        event: Inbound = _inbound_decoder.decode(payload)
        return event
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _classify(payload, exc) from None


def _classify(payload: bytes | str, exc: Exception) -> InvalidFrame:
    if isinstance(exc, RecursionError):
        return InvalidFrame("Invalid message format: nested too deeply",
                            ErrorCode.INVALID_JSON, None, None)
    try:
        envelope = _envelope_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return InvalidFrame("Invalid message format", ErrorCode.INVALID_JSON, None, None)
    ref = envelope.ref if isinstance(envelope.ref, (int, str)) and not isinstance(
        envelope.ref, bool) else None
    if not isinstance(envelope.event, str):
        return InvalidFrame("Invalid message format", ErrorCode.INVALID_JSON, None, ref)
    if envelope.event not in CLIENT_EVENTS:
        return InvalidFrame("Unknown event type", ErrorCode.UNKNOWN_EVENT, envelope.event, ref)
    # msgspec names the path of the offending field: "Expected `int`, got `str` - at `$.data...`"
    detail = str(exc).replace("`$.data.", "`").replace("`$.", "`")
    return InvalidFrame(f"Invalid payload: {detail}", ErrorCode.INVALID_PAYLOAD,
                        envelope.event, ref)


# --- server → client ------------------------------------------------------------------------


class Outbound(Struct, omit_defaults=True):
    """One server event: ``{"event": ..., "data": ..., "ref": ...}`` (ref only when set)."""

    event: str
    data: Any
    ref: Ref = None


class AuthSuccessData(Struct):
    user_id: int
    name: str
    phone: str | None
    stream: StreamPosition | UnsetType = UNSET  # absent when recovery is off
    recovered: bool | UnsetType = UNSET  # only in answer to a ``since``


class UserTypingData(Struct):
    chat_id: int
    user_id: int
    name: str
    is_typing: bool


class NewReactionData(Struct):
    message_id: int
    user_id: int
    name: str
    emoji: str
    chat_id: int | None


class MessageReadData(Struct):
    message_ids: list[int]
    user_id: int
    name: str
    chat_id: int | None


class ErrorData(Struct):
    message: str
    code: str


class AckMessageData(Struct):
    message_id: int


_EMPTY: Final = Raw(b"{}")
_encoder: Final = msgspec.json.Encoder()


def encode(event: str, data: Any, ref: Ref = None) -> bytes:
    """Encode one server event. ``data`` may be a Struct, a dict, or :class:`msgspec.Raw`."""
    return _encoder.encode(Outbound(event, data, ref))


def encode_error(code: ErrorCode | str, message: str, ref: Ref = None) -> bytes:
    return _encoder.encode(Outbound("error", ErrorData(message, str(code)), ref))


def encode_ack(ref: Ref, message_id: int | None = None) -> bytes:
    data = _EMPTY if message_id is None else AckMessageData(message_id)
    return _encoder.encode(Outbound("ack", data, ref))
