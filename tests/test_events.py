"""Wire events: decoding and validating client frames, encoding server frames (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gogate.errors import ErrorCode
from gogate.events import (
    AddReaction,
    Auth,
    AuthSuccessData,
    InvalidFrame,
    MarkRead,
    SendMessage,
    Typing,
    decode_inbound,
    encode,
    encode_ack,
    encode_error,
)


def frame(event: Any, data: Any = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"event": event}
    if data is not None:
        body["data"] = data
    body.update(extra)
    return json.dumps(body).encode()


def refused(payload: bytes | str) -> InvalidFrame:
    with pytest.raises(InvalidFrame) as info:
        decode_inbound(payload)
    return info.value


# --- the five client events ----------------------------------------------------------------

VALID = [
    ("auth", {"token": "abc.def.ghi"}, Auth),
    ("send_message", {"chat_id": 1, "text": "hi", "reply_to_id": 3, "attachment_ids": [4, 5]},
     SendMessage),
    ("typing", {"chat_id": 1, "is_typing": True}, Typing),
    ("add_reaction", {"message_id": 9, "emoji": "👍", "chat_id": 1}, AddReaction),
    ("mark_read", {"message_ids": [1, 2, 3], "chat_id": 1}, MarkRead),
]


@pytest.mark.parametrize(("event", "data", "cls"), VALID, ids=[v[0] for v in VALID])
@pytest.mark.parametrize("ref", ["r-1", 42, None])
def test_client_event_decodes_with_ref(event: str, data: dict[str, Any], cls: type,
                                       ref: str | int | None) -> None:
    extra = {} if ref is None else {"ref": ref}
    decoded = decode_inbound(frame(event, data, **extra))
    assert type(decoded) is cls
    assert decoded.ref == ref
    assert type(decoded.ref) is type(ref)
    assert msgspec.structs.asdict(decoded.data) | data == msgspec.structs.asdict(decoded.data)


def test_send_message_fields() -> None:
    event = decode_inbound(frame("send_message", {"chat_id": 7}))
    assert isinstance(event, SendMessage)
    assert (event.data.chat_id, event.data.text, event.data.reply_to_id,
            event.data.attachment_ids) == (7, None, None, None)
    event = decode_inbound(frame("send_message", {"chat_id": 7, "text": "héllo", "reply_to_id":
                                                  2, "attachment_ids": [1]}))
    assert isinstance(event, SendMessage)
    assert (event.data.text, event.data.reply_to_id, event.data.attachment_ids) == (
        "héllo", 2, [1])


def test_decodes_str_payload_too() -> None:
    event = decode_inbound('{"event":"typing","data":{"chat_id":2,"is_typing":false}}')
    assert isinstance(event, Typing)
    assert (event.data.chat_id, event.data.is_typing) == (2, False)


def test_mark_read_accepts_100_ids() -> None:
    event = decode_inbound(frame("mark_read", {"message_ids": list(range(1, 101))}))
    assert isinstance(event, MarkRead)
    assert len(event.data.message_ids) == 100
    assert event.data.chat_id is None


@pytest.mark.parametrize(("event", "data"), [
    ("send_message", {"chat_id": 0}),
    ("send_message", {"chat_id": -5}),
    ("typing", {"chat_id": 0, "is_typing": True}),
    ("add_reaction", {"message_id": 1, "emoji": "x", "chat_id": -1}),
    ("mark_read", {"message_ids": [1], "chat_id": 0}),
])
def test_non_positive_chat_id_decodes(event: str, data: dict[str, Any]) -> None:
    # the handler answers INVALID_CHAT, not the decoder INVALID_PAYLOAD
    decoded = decode_inbound(frame(event, data))
    assert decoded.data.chat_id == data["chat_id"]


def test_unknown_fields_ignored() -> None:
    event = decode_inbound(frame("typing", {"chat_id": 1, "is_typing": True, "extra": [1]},
                                 ref=3, meta={"x": 1}))
    assert isinstance(event, Typing)
    assert event.ref == 3


@pytest.mark.parametrize("ref", [True, False, 1.5, [1], {"a": 1}])
def test_ref_of_wrong_type_refused(ref: Any) -> None:
    error = refused(frame("auth", {"token": "t"}, ref=ref))
    assert error.code is ErrorCode.INVALID_PAYLOAD
    assert "ref" in error.message
    assert error.ref is None


# --- INVALID_JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"{", b'{"event": "auth",', b"[]", b'[{"event":"auth"}]', b'"auth"',
    b"42", b"null", b'{"event": 1, "data": {}}', b'{"event": null}', b'{"event": ["auth"]}',
    b'{"data": {"token": "t"}}', b"\xff\xfe", "{\"event\": 'auth'}",
])
def test_invalid_json(payload: bytes | str) -> None:
    error = refused(payload)
    assert error.code is ErrorCode.INVALID_JSON
    assert error.message == "Invalid message format"


# --- UNKNOWN_EVENT -------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["abc", 12])
def test_unknown_event_keeps_ref(ref: str | int) -> None:
    error = refused(frame("delete_everything", {"x": 1}, ref=ref))
    assert error.code is ErrorCode.UNKNOWN_EVENT
    assert error.message == "Unknown event type"
    assert error.ref == ref
    assert error.event == "delete_everything"


def test_unknown_event_without_data() -> None:
    error = refused(b'{"event":"ping"}')
    assert error.code is ErrorCode.UNKNOWN_EVENT
    assert error.ref is None


def test_event_names_are_case_sensitive() -> None:
    assert refused(frame("AUTH", {"token": "t"})).code is ErrorCode.UNKNOWN_EVENT


# --- INVALID_PAYLOAD -----------------------------------------------------------------------


@pytest.mark.parametrize(("event", "data", "field"), [
    ("send_message", {}, "chat_id"),
    ("send_message", {"chat_id": "1"}, "chat_id"),
    ("send_message", {"chat_id": 1.5}, "chat_id"),
    ("send_message", {"chat_id": True}, "chat_id"),
    ("send_message", {"chat_id": 1, "text": 5}, "text"),
    ("send_message", {"chat_id": 1, "reply_to_id": 0}, "reply_to_id"),
    ("send_message", {"chat_id": 1, "attachment_ids": [0]}, "attachment_ids"),
    ("send_message", {"chat_id": 1, "attachment_ids": "1"}, "attachment_ids"),
    ("typing", {"chat_id": 1}, "is_typing"),
    ("typing", {"chat_id": 1, "is_typing": 1}, "is_typing"),
    ("typing", {"chat_id": 1, "is_typing": "true"}, "is_typing"),
    ("typing", {"is_typing": True}, "chat_id"),
    ("mark_read", {"message_ids": []}, "message_ids"),
    ("mark_read", {"message_ids": list(range(1, 102))}, "message_ids"),
    ("mark_read", {"message_ids": [1, 0, 2]}, "message_ids"),
    ("mark_read", {"message_ids": [1, -1]}, "message_ids"),
    ("mark_read", {}, "message_ids"),
    ("mark_read", {"message_ids": [1], "chat_id": "1"}, "chat_id"),
    ("add_reaction", {"message_id": 0, "emoji": "x"}, "message_id"),
    ("add_reaction", {"message_id": "1", "emoji": "x"}, "message_id"),
    ("add_reaction", {"message_id": 1, "emoji": ""}, "emoji"),
    ("add_reaction", {"message_id": 1}, "emoji"),
    ("auth", {}, "token"),
    ("auth", {"token": 5}, "token"),
])
def test_invalid_payload_names_field(event: str, data: dict[str, Any], field: str) -> None:
    error = refused(frame(event, data, ref="r"))
    assert error.code is ErrorCode.INVALID_PAYLOAD
    assert field in error.message
    assert error.event == event
    assert error.ref == "r"


@pytest.mark.parametrize("event", ["auth", "send_message", "typing", "add_reaction",
                                   "mark_read"])
def test_missing_data_names_data(event: str) -> None:
    error = refused(frame(event, ref=1))
    assert error.code is ErrorCode.INVALID_PAYLOAD
    assert "data" in error.message
    assert error.ref == 1


@pytest.mark.parametrize("data", [None, [], "x", 1])
def test_data_not_an_object(data: Any) -> None:
    error = refused(json.dumps({"event": "typing", "data": data}))
    assert error.code is ErrorCode.INVALID_PAYLOAD


# --- encoding ------------------------------------------------------------------------------


def test_encode_struct_data_without_ref() -> None:
    out = encode("auth_success", AuthSuccessData(1, "John Doe", None))
    assert json.loads(out) == {"event": "auth_success",
                               "data": {"user_id": 1, "name": "John Doe", "phone": None}}


@pytest.mark.parametrize("ref", ["r1", 7, 0, ""])
def test_encode_with_ref_at_top_level(ref: str | int) -> None:
    out = json.loads(encode("auth_success", AuthSuccessData(1, "J", "+7"), ref))
    assert out == {"event": "auth_success", "ref": ref,
                   "data": {"user_id": 1, "name": "J", "phone": "+7"}}
    assert type(out["ref"]) is type(ref)


def test_encode_dict_data() -> None:
    assert json.loads(encode("custom", {"a": [1, 2]})) == {"event": "custom",
                                                           "data": {"a": [1, 2]}}


def test_encode_error_shape() -> None:
    out = json.loads(encode_error(ErrorCode.INVALID_CHAT, "Invalid chat_id"))
    assert out == {"event": "error", "data": {"message": "Invalid chat_id",
                                              "code": "INVALID_CHAT"}}
    assert "ref" not in out


@pytest.mark.parametrize("ref", ["abc", 3])
def test_encode_error_with_ref(ref: str | int) -> None:
    out = json.loads(encode_error("RATE_LIMITED", "Too fast", ref))
    assert out == {"event": "error", "ref": ref,
                   "data": {"message": "Too fast", "code": "RATE_LIMITED"}}


def test_encode_ack_empty_data() -> None:
    out = json.loads(encode_ack("x"))
    assert out == {"event": "ack", "ref": "x", "data": {}}


def test_encode_ack_with_message_id() -> None:
    out = json.loads(encode_ack(5, 124))
    assert out == {"event": "ack", "ref": 5, "data": {"message_id": 124}}


def test_encode_is_one_json_object_without_newline() -> None:
    out = encode("x", {"text": "line1\nline2"}, "r")
    assert b"\n" not in out
    assert isinstance(json.loads(out), dict)


BACKEND_BODIES = [
    b'{"id":124,"chat_id":1}',
    b'{ "chat_id" : 1 ,   "id":124, "text": "Hello back!",\n "reply_to": null }',
    b'{"text":"\\u00e9t\\u00e9 \xc3\xa9t\xc3\xa9","id":1,"chat_id":2,"n":1.50,"big":1e3}',
]


@pytest.mark.parametrize("body", BACKEND_BODIES)
def test_raw_data_spliced_byte_for_byte(body: bytes) -> None:
    out = encode("new_message", msgspec.Raw(body))
    assert body in out
    assert out.count(body) == 1
    start = out.index(body)
    assert out[:start].rstrip().endswith(b'"data":')
    assert json.loads(out) == {"event": "new_message", "data": json.loads(body)}


def test_raw_data_with_ref() -> None:
    body = b'{"b":2,  "a":1}'
    out = encode("new_message", msgspec.Raw(body), 9)
    assert body in out
    assert json.loads(out) == {"event": "new_message", "data": {"b": 2, "a": 1}, "ref": 9}


def test_roundtrip_of_non_ascii_and_escapes() -> None:
    out = encode("user_typing", {"name": 'Zoë "Z" \\ </script>'}, 'r"1')
    assert json.loads(out) == {"event": "user_typing", "data": {"name": 'Zoë "Z" \\ </script>'},
                               "ref": 'r"1'}
