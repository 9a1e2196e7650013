"""What the fuzz tests send and what the gateway must answer: hypothesis strategies for whole
WebSocket frames and for JSON-ish client events, and a model of the gateway's frame layer that
says, for any sequence of frames, which answers come back and with which close codes the
connection may end.

The model follows RFC 6455 and the gateway's documented lifetime rules:

- a frame with an RSV bit, an unmasked frame, a reserved opcode, a continuation with nothing
  to continue, a new data frame inside a fragmented message, a fragmented control frame or a
  control frame above 125 bytes: closed 1002;
- a message (reassembled from its fragments) above the size limit: closed 1009, from the frame
  header that passes the limit;
- a binary frame: closed 1003; a text message that is not UTF-8: closed 1007;
- a close frame: a one-byte payload or a code that may not be sent (below 1000, 1004-1006,
  1015, 1016-2999) is a protocol error (1002), a reason that is not UTF-8 is 1007 (1002
  allowed); a code from 5000 up is undefined (1002 or a normal close); else the gateway
  answers the close with 1000 or the client's code;
- a ping is answered by a pong with its payload; a pong is not answered;
- every whole text message that is UTF-8 is answered by one ``error`` event (the fuzzer's
  messages are never client events).

A frame with several faults may be refused for any of them: the accepted codes are the union.
The gateway may also fail a fragmented text message as soon as a fragment makes it invalid
UTF-8 rather than at its end.

This is a helper module, not a test file: pytest collects nothing from it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RESERVED_OPCODES = (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
CONTROL = (CLOSE, PING, PONG)

# What every fuzz connection sends last: an unknown event, answered AUTH_REQUIRED before auth
# and UNKNOWN_EVENT after, with the ref copied. Its answer shows that every input before it
# was read, and the connection is still open.
PROBE_REF = "fuzz-probe"
PROBE = json.dumps({"event": "fuzz_probe", "data": {}, "ref": PROBE_REF}).encode()

# Error codes an input may provoke. INTERNAL_ERROR is missing on purpose: it is a fault.
ERROR_CODES = frozenset({
    "INVALID_JSON", "UNKNOWN_EVENT", "INVALID_PAYLOAD", "INVALID_CHAT", "AUTH_REQUIRED",
    "AUTH_FAILED", "AUTH_EXPIRED", "ALREADY_AUTHENTICATED", "NOT_A_MEMBER", "FORBIDDEN",
    "NOT_FOUND", "VALIDATION_FAILED", "RATE_LIMITED", "TOO_MANY_CONNECTIONS",
    "BACKEND_UNAVAILABLE",
})
# Events the gateway may send to the client that sent an event.
ANSWER_EVENTS = frozenset({"error", "ack", "auth_success", "new_message", "new_reaction",
                           "message_read", "user_typing"})
# Words that must never reach a client in an error message.
LEAKS = ("Traceback", 'File "', "127.0.0.1", "localhost", "http://", "Exception")


# --- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One client frame. ``claimed`` announces a payload length other than the real one (the
    header of an oversized frame, sent without its payload)."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    claimed: int | None = None

    def encode(self) -> bytes:
        size = len(self.payload) if self.claimed is None else self.claimed
        mask_bit = 0x80 if self.masked else 0
        first = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        if size < 126:
            header = bytes((first, mask_bit | size))
        elif size < 65536:
            header = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
        else:
            header = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
        if not self.masked:
            return header + self.payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(self.payload))
        return header + key + masked

    def __repr__(self) -> str:  # short enough to read in a falsifying example
        bits = [f"op={self.opcode:#x}", f"len={len(self.payload)}"]
        if not self.fin:
            bits.append("fin=0")
        if self.rsv:
            bits.append(f"rsv={self.rsv}")
        if not self.masked:
            bits.append("unmasked")
        if self.claimed is not None:
            bits.append(f"claims={self.claimed}")
        shown = self.payload[:40]
        return f"Frame({', '.join(bits)}, {shown!r}{'…' if len(self.payload) > 40 else ''})"


# Close codes an endpoint may put in a close frame (RFC 6455 section 7.4 and the IANA
# registry: 1012-1014 are registered since).
def close_code_allowed(code: int) -> bool:
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


def _utf8_fails_early(data: bytes) -> bool:
    """The bytes cannot be the start of valid UTF-8 (not merely cut inside a character)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason != "unexpected end of data"
    return False


@dataclass
class Expectation:
    """What the gateway answers a frame sequence followed by the probe: ``answers`` in order
    (``("error",)`` or ``("pong", payload)``), then either the probe's answer (``close`` is
    None) or a close frame with one of the codes in ``close``."""

    answers: list[tuple[Any, ...]] = field(default_factory=list)
    close: frozenset[int] | None = None


def parser_faults(frame: Frame, limit: int) -> set[int]:
    """Faults found while the frame is parsed, before the gateway sees it: the opcode, the
    mask, the size of a control frame or of a data frame, a close frame's payload."""
    size = len(frame.payload) if frame.claimed is None else frame.claimed
    faults: set[int] = set()
    if not frame.masked or frame.opcode in RESERVED_OPCODES:
        faults.add(1002)
    if frame.opcode in CONTROL and (not frame.fin or size > 125):
        faults.add(1002)
    if frame.opcode not in CONTROL and size > limit:
        faults.add(1009)
    if frame.opcode == CLOSE and not faults:
        answer = _close_answer(frame.payload)
        if 1000 not in answer:
            faults |= answer
    return faults


def expect(frames: list[Frame], limit: int) -> Expectation:
    """The model: what the gateway must answer ``frames`` (then the probe) with.

    The WebSocket parser (picows) reads one frame ahead: when the frame after the one that ends
    the connection is malformed, or is a second CLOSE, the connection may end with that
    frame's code instead; and the answers to the last frames before a close may be missing
    (a frame is not delivered when the frame behind it in the same read is malformed)."""
    result = Expectation()
    message: bytearray | None = None  # the fragmented message under way
    is_text = True
    early_utf8 = False  # a fragment already made the text invalid UTF-8
    sequence = [*frames, Frame(TEXT, PROBE)]

    for index, frame in enumerate(sequence):
        following = sequence[index + 1] if index + 1 < len(sequence) else None
        ahead = parser_faults(following, limit) if following is not None else set()
        if frame.opcode == CLOSE and following is not None and following.opcode == CLOSE:
            ahead.add(1002)  # the parser fails a second CLOSE it reads ahead

        def finish(*codes: int, ahead: set[int] = ahead, early: bool = early_utf8
                   ) -> Expectation:
            result.close = frozenset({*codes, *ahead, *((1007,) if early else ())})
            return result

        faults = parser_faults(frame, limit)
        if frame.rsv:
            faults.add(1002)
        if frame.opcode in (TEXT, BINARY) and message is not None:
            faults.add(1002)
        if frame.opcode == CONT and message is None:
            faults.add(1002)
        if frame.opcode == CONT and message is not None and \
                len(message) + len(frame.payload) > limit:
            faults.add(1009)
        if frame.opcode == BINARY:
            faults.add(1003)
        if faults:
            return finish(*faults)
        if frame.opcode == CLOSE:
            return finish(*_close_answer(frame.payload))
        if frame.opcode == PING:
            result.answers.append(("pong", frame.payload))
            continue
        if frame.opcode == PONG:
            continue
        if frame.opcode == TEXT:
            message, is_text = bytearray(frame.payload), True
        else:  # CONT
            assert message is not None
            message += frame.payload
        if is_text and _utf8_fails_early(bytes(message)):
            early_utf8 = True
        if frame.fin:
            whole, message = bytes(message), None
            try:
                whole.decode("utf-8")
            except UnicodeDecodeError:
                return finish(1007)
            if frame.payload is not PROBE:
                result.answers.append(("error",))
    return result


def _close_answer(payload: bytes) -> set[int]:
    """The codes a client's close frame may be answered with; a frame with several faults
    (a forbidden code and a reason that is not UTF-8) may be failed for either."""
    if not payload:
        return {1000}
    if len(payload) == 1:
        return {1002}
    code = struct.unpack("!H", payload[:2])[0]
    faults: set[int] = set()
    if code < 5000 and not close_code_allowed(code):
        faults.add(1002)
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        faults |= {1007, 1002}
    if faults:
        return faults
    if code >= 5000:  # undefined rather than forbidden: failing or accepting both do
        return {1000, 1002, code}
    return {1000, code}


# --- frame strategies -----------------------------------------------------------------------

INVALID_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
                b"\x80", b"ok\xfe", b'{"event":"x\xc3"}')
ODD_CLOSE_CODES = (0, 1, 999, 1000, 1001, 1004, 1005, 1006, 1011, 1012, 1013, 1014, 1015, 1016,
                   2999, 3000, 4001, 4999, 5000, 65535)


def text_payloads(limit: int) -> st.SearchStrategy[bytes]:
    """Text frame payloads: garbage, JSON that is no client event, invalid UTF-8, and sizes
    around the limit. None of them is a client event, so each whole one is answered by an
    ``error`` (or a close)."""
    return st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from(INVALID_UTF8),
        st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3)
        .map(lambda d: json.dumps({**d, "event": "no_such_event"}).encode()),
        st.integers(limit - 2, limit + 2).map(lambda n: b'"' + b"x" * max(0, n - 2) + b'"'),
    )


def control_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=8), st.binary(min_size=120, max_size=130))


def close_payloads() -> st.SearchStrategy[bytes]:
    codes = st.sampled_from(ODD_CLOSE_CODES) | st.integers(0, 65535)
    reasons = st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")) \
        | st.sampled_from(INVALID_UTF8) | st.binary(min_size=110, max_size=130)
    return st.one_of(
        st.just(b""), st.binary(min_size=1, max_size=1),
        st.builds(lambda code, reason: struct.pack("!H", code) + reason, codes, reasons))


@st.composite
def frames(draw: st.DrawFn, limit: int) -> Frame:
    """One frame of any kind, mostly well-formed, sometimes with a fault of the header."""
    opcode = draw(st.sampled_from((TEXT, TEXT, TEXT, TEXT, CONT, BINARY, CLOSE, CLOSE, PING,
                                   PING, PING, PONG, PONG, 0x3, 0xB, 0xF)))
    if opcode == CLOSE:
        payload = draw(close_payloads())
    elif opcode in (PING, PONG):
        payload = draw(control_payloads())
    elif opcode in RESERVED_OPCODES:
        payload = draw(st.binary(max_size=16))
    else:
        payload = draw(text_payloads(limit))
    fin = draw(st.sampled_from((True, True, True, False)))
    rsv = draw(st.sampled_from((0,) * 30 + (1, 2, 4, 7)))
    masked = draw(st.sampled_from((True,) * 40 + (False,)))
    return Frame(opcode, payload, fin=fin, rsv=rsv, masked=masked)


@st.composite
def fragmented_message(draw: st.DrawFn, limit: int) -> list[Frame]:
    """A text message cut into fragments at any byte (inside characters too), with control
    frames between them; sometimes binary, sometimes left unfinished."""
    text = draw(st.text(max_size=40) | st.sampled_from(("€uro", "😀🙂", "日本語のテキスト")))
    body = json.dumps({"event": "no_such_event", "text": text}, ensure_ascii=False).encode()
    body = draw(st.sampled_from((body, body, body, body + b"\xff", b"x" * (limit + 1))))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    opcode = draw(st.sampled_from((TEXT, TEXT, TEXT, BINARY)))
    finished = draw(st.sampled_from((True, True, True, False)))
    result: list[Frame] = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        result.append(Frame(opcode if index == 0 else CONT, piece, fin=last and finished))
        if not last and draw(st.booleans()):
            result.append(Frame(draw(st.sampled_from((PING, PONG))), draw(st.binary(max_size=8))))
    return result


def header_only(limit: int) -> st.SearchStrategy[Frame]:
    """The header of a data frame that claims more than the limit, sent alone: refused from
    the header, before any payload arrives."""
    return st.builds(lambda opcode, claimed, fin: Frame(opcode, b"", fin=fin, claimed=claimed),
                     st.sampled_from((TEXT, BINARY)),
                     st.sampled_from((limit + 1, 65535, 65536, 2**31, 2**63 - 1)),
                     st.booleans())


def frame_sequences(limit: int) -> st.SearchStrategy[list[Frame]]:
    """What one fuzz connection sends before the probe."""
    loose = st.lists(frames(limit), min_size=1, max_size=4)
    with_header = st.tuples(st.lists(frames(limit), max_size=2), header_only(limit)) \
        .map(lambda pair: [*pair[0], pair[1]])
    return st.one_of(loose, loose, fragmented_message(limit), with_header)


# --- event strategies -----------------------------------------------------------------------

OWN_TOKEN, OTHER_TOKEN = "\x00own-token", "\x00other-token"  # replaced by real tokens

CLIENT_EVENT_NAMES = ("auth", "send_message", "typing", "add_reaction", "mark_read")
ODD_EVENT_NAMES = ("", "AUTH", "auth ", "typing\x00", "ack", "error", "new_message",
                   "auth_success", "__proto__", "toString", "é", "😀")

HUGE = st.sampled_from((2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.sampled_from(("😀", "\u202e", "\ufeff", "\x00", "a" * 300)))
anything = st.recursive(json_scalars,
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=12)
ids = st.one_of(st.sampled_from((1, 2, 3, 4, 0, -1, 999_999)), st.integers(), HUGE, anything)
refs = st.one_of(st.integers(), HUGE, st.text(max_size=30), st.just(""), anything)
tokens = st.one_of(st.sampled_from((OWN_TOKEN, OTHER_TOKEN, "", "eyJhbGciOiJub25lIn0.e30.")),
                   st.text(max_size=40), anything)


def _maybe(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dictionaries with any subset of ``fields``, plus the odd unknown key."""
    return st.fixed_dictionaries({}, optional={**fields, "extra": anything})


# Data any field may hold, for chaotic events.
CHAOTIC: dict[str, st.SearchStrategy[Any]] = {
    "auth": _maybe({"token": tokens, "since": anything}),
    "send_message": _maybe({
        "chat_id": ids, "text": st.text(max_size=50) | anything, "reply_to_id": ids,
        "attachment_ids": st.lists(ids, max_size=3) | anything}),
    "typing": _maybe({"chat_id": ids, "is_typing": st.booleans() | anything}),
    "add_reaction": _maybe({"message_id": ids, "emoji": st.text(max_size=70) | anything,
                            "chat_id": ids}),
    "mark_read": _maybe({"message_ids": st.lists(ids, max_size=120) | anything,
                         "chat_id": ids}),
}

# Data of the right types, with values that reach every answer of the backend: chats the
# user is or is not in, chats and messages that do not exist, texts and emoji of any length.
chats = st.sampled_from((1, 2, 3)) | st.sampled_from((4, 999_999, 0, -1)) | st.integers(-5, 2**40)
messages = st.integers(1, 60) | st.integers(1, 2**62)
emoji = st.sampled_from(("👍", "❤️", "😀", "+1", " ", "x" * 64)) | st.text(min_size=1,
                                                                          max_size=70)
WELL_TYPED: dict[str, st.SearchStrategy[Any]] = {
    "auth": st.fixed_dictionaries(
        {"token": st.sampled_from((OWN_TOKEN, OWN_TOKEN, OTHER_TOKEN)) | st.text(max_size=40)},
        optional={"since": st.fixed_dictionaries({"epoch": st.text(max_size=12),
                                                  "offset": st.integers(-1, 2**40)})}),
    "send_message": st.fixed_dictionaries(
        {"chat_id": chats},
        optional={"text": st.text(max_size=60), "reply_to_id": messages,
                  "attachment_ids": st.lists(st.integers(1, 5), max_size=3)}),
    "typing": st.fixed_dictionaries({"chat_id": chats, "is_typing": st.booleans()}),
    "add_reaction": st.fixed_dictionaries({"message_id": messages, "emoji": emoji},
                                          optional={"chat_id": chats}),
    "mark_read": st.fixed_dictionaries(
        {"message_ids": st.lists(messages, min_size=1, max_size=5)
         | st.lists(messages, min_size=95, max_size=105)},
        optional={"chat_id": chats}),
}
small_refs = st.integers(-1000, 1000) | st.text(max_size=12)


@st.composite
def well_typed_events(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(CLIENT_EVENT_NAMES))
    event: dict[str, Any] = {"event": name, "data": draw(WELL_TYPED[name])}
    if draw(st.booleans()):
        event["ref"] = draw(small_refs)
    return event


@st.composite
def nearly_typed_events(draw: st.DrawFn) -> dict[str, Any]:
    """A well-typed event with one field (of the event or of its data) of a wrong type or
    range, or missing."""
    event = draw(well_typed_events())
    target = event["data"] if draw(st.booleans()) else event
    key = draw(st.sampled_from(sorted(target)) | st.sampled_from(("ref", "extra")))
    if draw(st.integers(0, 4)) == 0:
        target.pop(key, None)
    else:
        target[key] = draw(anything | HUGE)
    return event


@st.composite
def chaotic_events(draw: st.DrawFn) -> Any:
    """Any event name, data that may be anything, a ref of any type."""
    name = draw(st.sampled_from(CLIENT_EVENT_NAMES) | st.sampled_from(ODD_EVENT_NAMES)
                | st.text(max_size=12))
    data = draw(CHAOTIC.get(name, anything))
    event: dict[str, Any] = {"event": name, "data": data}
    if draw(st.booleans()):
        event["ref"] = draw(refs)
    return event


def event_objects() -> st.SearchStrategy[Any]:
    """A JSON value shaped like a client event, mostly: well-typed events (which reach the
    backend), events with one field wrong, chaotic ones, and values that are no event."""
    return st.one_of(well_typed_events(), well_typed_events(), nearly_typed_events(),
                     nearly_typed_events(), chaotic_events(), anything)


# Texts that are no JSON a client should send: cut short, nested deeply, JSON's non-standard
# literals, two objects in one message, a byte-order mark, lone surrogates.
@st.composite
def broken_texts(draw: st.DrawFn, valid: str) -> str:
    kind = draw(st.sampled_from(("cut", "nested", "fixed")))
    if kind == "cut":
        return valid[:draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "nested":
        depth = draw(st.integers(1, 4000))
        inner = draw(st.sampled_from(("[", '{"a":')))
        close = "]" if inner == "[" else "}"
        return (f'{{"event":"{draw(st.sampled_from(CLIENT_EVENT_NAMES))}","data":'
                + inner * depth + "0" + close * depth + "}")
    return draw(st.sampled_from((
        "NaN", '{"event":"typing","data":{"chat_id":1,"is_typing":true},"ref":NaN}',
        '{"event":"send_message","data":{"chat_id":1e999}}', "", " ", "[]", "null",
        '{"event":"auth","data":{"token":"\\ud800"}}', '{"event":"auth"}{"event":"auth"}',
        '{"event":"typing",}', "\ufeff{}", '{"event":"send_message","data":{"chat_id":1,'
        '"text":"\\udc00"}}')))


@st.composite
def event_texts(draw: st.DrawFn) -> tuple[Any, str]:
    """An event object and the JSON text sent for it (``None`` object: a broken text)."""
    obj = draw(event_objects())
    ascii_only = draw(st.booleans())
    text = json.dumps(obj, ensure_ascii=ascii_only)
    if not ascii_only and _has_surrogate(text):
        text = json.dumps(obj)
    if draw(st.sampled_from((False,) * 9 + (True,))):
        return None, draw(broken_texts(text))
    return obj, text


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def with_tokens(text: str, own: str, other: str) -> str:
    """The text with the token placeholders replaced by real tokens."""
    return text.replace(json.dumps(OWN_TOKEN)[1:-1], own).replace(
        json.dumps(OTHER_TOKEN)[1:-1], other)


def may_stay_silent(obj: Any) -> bool:
    """An event the gateway may rightly leave unanswered: ``typing`` without a ref (a
    successful one is broadcast to the other members only)."""
    return isinstance(obj, dict) and obj.get("event") == "typing" and obj.get("ref") is None


def valid_ref(value: Any) -> bool:
    """A ref the gateway copies: a string or an integer (JSON has no other integers)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
