"""The WebSocket protocol of the contract, section 3, as a client sees it: every client event,
every server event, and every error code a client can provoke without a failing backend.

Demo data: chat 1 "General" holds users 1, 2, 3; chat 2 holds 1 and 2; chat 3 holds 3 and 4.
User 4 (Dave) is connected in the broadcast tests and must never see anything of chat 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from conftest import (
    CAROL,
    CAROL_DAVE,
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    JOHN_JANE,
    Client,
    Connect,
    backend_post,
)

from gogate.devbackend import DevBackend

NAMES = {JOHN: "John Doe", JANE: "Jane Smith", CAROL: "Carol White", DAVE: "Dave Black"}
PHONES = {JOHN: "+79991234567", JANE: "+79991234568", CAROL: "+79991234569"}
UNKNOWN_CHAT = 999_999


# --- helpers ----------------------------------------------------------------------------------


async def frames(client: Client, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next ``count`` frames of one client."""
    return [await client.recv(timeout) for _ in range(count)]


async def answers(client: Client, *events: str) -> dict[str, dict[str, Any]]:
    """The next frames, which must be exactly ``events`` in any order; by event name."""
    got = await frames(client, len(events))
    names = sorted(f["event"] for f in got)
    assert names == sorted(events), got
    return {f["event"]: f for f in got}


async def all_silent(*clients: Client, within: float = 0.3) -> None:
    await asyncio.gather(*(c.silent(within) for c in clients))


def expected_message(backend: DevBackend, message_id: int) -> dict[str, Any]:
    """The message JSON the development backend answers ``POST /api/v1/messages`` with, built
    from what it stored."""
    store = backend.store
    message = store.get_message(message_id)
    assert message is not None, f"message {message_id} is not in the backend"
    sender = store.get_user(message.user_id)
    assert sender is not None
    reply_to = None
    if message.reply_to_id is not None:
        reply = store.get_message(message.reply_to_id)
        assert reply is not None
        author = store.get_user(reply.user_id)
        reply_to = {"id": reply.id, "text": reply.text,
                    "user": {"id": reply.user_id,
                             "full_name": author.full_name if author else None}}
    attachments = store.attachments(list(message.attachment_ids))
    return {
        "id": message.id,
        "chat_id": message.chat_id,
        "user": {"id": sender.id, "full_name": sender.full_name,
                 "first_name": sender.first_name, "last_name": sender.last_name,
                 "phone": sender.phone},
        "type": "file" if attachments and message.text is None else "text",
        "text": message.text,
        "reply_to": reply_to,
        "attachments": [{"id": a.id, "file_name": a.file_name, "size": a.size, "url": a.url}
                        for a in attachments],
        "reactions": [],
        "read_count": 0,
        "mentions": None,
        "created_at": message.created_at,
        "edited_at": message.edited_at,
        "is_edited": message.edited_at is not None,
    }


async def rest_message(backend: DevBackend, token: str, chat_id: int, text: str) -> int:
    """Create a message through the backend's user API directly, bypassing the gateway."""
    async with aiohttp.ClientSession() as session, session.post(
            f"{backend.url}/api/v1/messages", json={"chat_id": chat_id, "content": text},
            headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 201, await response.text()
        message_id: int = (await response.json())["id"]
        return message_id


async def relay(sender: Client, receivers: list[Client], chat_id: int, text: str) -> int:
    """Send a message through the gateway and drain its ``new_message`` everywhere."""
    await sender.send("send_message", {"chat_id": chat_id, "text": text}, ref="relay")
    got = await answers(sender, "new_message", "ack")
    message_id: int = got["ack"]["data"]["message_id"]
    for receiver in receivers:
        frame = await receiver.expect("new_message")
        assert frame["data"]["id"] == message_id
    return message_id


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["a-1", 42])
async def test_auth_success_carries_the_user_and_the_ref(connect: Connect,
                                                         tokens: dict[int, str],
                                                         ref: str | int) -> None:
    client = await connect()
    await client.send("auth", {"token": tokens[JOHN]}, ref=ref)
    frame = await client.expect("auth_success")
    assert frame["ref"] == ref
    assert frame["data"] == {"user_id": JOHN, "name": NAMES[JOHN], "phone": PHONES[JOHN]}


async def test_auth_success_without_ref_has_no_ref(connect: Connect,
                                                   tokens: dict[int, str]) -> None:
    client = await connect()
    await client.send("auth", {"token": tokens[JANE]})
    frame = await client.expect("auth_success")
    assert "ref" not in frame or frame["ref"] is None
    assert frame["data"]["user_id"] == JANE


# --- send_message -----------------------------------------------------------------------------


async def test_new_message_reaches_every_connection_of_every_online_member(
        connect: Connect, tokens: dict[int, str], backend: DevBackend) -> None:
    john_a, john_b = await connect(tokens[JOHN]), await connect(tokens[JOHN])
    jane_a, jane_b = await connect(tokens[JANE]), await connect(tokens[JANE])
    carol, dave = await connect(tokens[CAROL]), await connect(tokens[DAVE])

    await john_a.send("send_message", {"chat_id": GENERAL, "text": "Hello, General"}, ref=7)
    got = await answers(john_a, "new_message", "ack")
    ack = got["ack"]
    assert ack["ref"] == 7
    message_id = ack["data"]["message_id"]
    assert ack["data"] == {"message_id": message_id}

    expected = expected_message(backend, message_id)
    assert expected["chat_id"] == GENERAL and expected["text"] == "Hello, General"
    assert expected["user"]["id"] == JOHN
    assert got["new_message"]["data"] == expected
    assert "ref" not in got["new_message"] or got["new_message"]["ref"] is None
    for receiver in (john_b, jane_a, jane_b, carol):
        frame = await receiver.expect("new_message")
        assert frame["data"] == expected
    await all_silent(john_a, john_b, jane_a, jane_b, carol, dave)


async def test_new_message_for_a_reply_carries_reply_to(connect: Connect, tokens: dict[int, str],
                                                        backend: DevBackend) -> None:
    john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
    original = await relay(john, [jane], GENERAL, "Who is in?")

    await jane.send("send_message", {"chat_id": GENERAL, "text": "Me", "reply_to_id": original},
                    ref="reply")
    got = await answers(jane, "new_message", "ack")
    data = got["new_message"]["data"]
    assert data["id"] == got["ack"]["data"]["message_id"]
    assert data == expected_message(backend, data["id"])
    assert data["reply_to"] == {"id": original, "text": "Who is in?",
                                "user": {"id": JOHN, "full_name": NAMES[JOHN]}}
    assert (await john.expect("new_message"))["data"] == data


async def test_new_message_with_an_attachment(connect: Connect, tokens: dict[int, str],
                                              backend: DevBackend) -> None:
    john, carol = await connect(tokens[JOHN]), await connect(tokens[CAROL])
    attachment = await backend_post(backend, "/api/dev/attachments",
                                    {"user_id": JOHN, "file_name": "plan.txt", "size": 123})

    await john.send("send_message", {"chat_id": GENERAL, "attachment_ids": [attachment["id"]]},
                    ref="file")
    got = await answers(john, "new_message", "ack")
    data = got["new_message"]["data"]
    assert data == expected_message(backend, got["ack"]["data"]["message_id"])
    assert data["attachments"] == [{"id": attachment["id"], "file_name": "plan.txt",
                                    "size": 123, "url": attachment["url"]}]
    assert data["text"] is None
    assert (await carol.expect("new_message"))["data"] == data


async def test_no_ack_without_ref(connect: Connect, tokens: dict[int, str]) -> None:
    john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
    await john.send("send_message", {"chat_id": JOHN_JANE, "text": "no ref"})
    mine = await john.expect("new_message")
    assert (await jane.expect("new_message"))["data"] == mine["data"]
    await john.send("typing", {"chat_id": JOHN_JANE, "is_typing": True})
    assert (await jane.expect("user_typing"))["data"]["user_id"] == JOHN
    await all_silent(john, jane)



# --- typing -----------------------------------------------------------------------------------


async def test_typing_reaches_members_except_all_the_senders_connections(
        connect: Connect, tokens: dict[int, str]) -> None:
    john_a, john_b = await connect(tokens[JOHN]), await connect(tokens[JOHN])
    jane, carol, dave = (await connect(tokens[JANE]), await connect(tokens[CAROL]),
                         await connect(tokens[DAVE]))

    await john_a.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="t1")
    ack = await john_a.expect("ack")
    assert ack["ref"] == "t1" and ack["data"] == {}
    for receiver in (jane, carol):
        frame = await receiver.expect("user_typing")
        assert frame["data"] == {"chat_id": GENERAL, "user_id": JOHN, "name": NAMES[JOHN],
                                 "is_typing": True}
    await all_silent(john_a, john_b, jane, carol, dave)


async def test_repeated_typing_is_broadcast_once_a_second_and_a_change_at_once(
        connect: Connect, tokens: dict[int, str]) -> None:
    john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])

    async def typing(is_typing: bool, ref: str) -> None:
        await john.send("typing", {"chat_id": GENERAL, "is_typing": is_typing}, ref=ref)
        assert (await john.expect("ack"))["ref"] == ref

    await typing(True, "1")
    assert (await jane.expect("user_typing"))["data"]["is_typing"] is True
    await typing(True, "2")  # the same state within a second: not broadcast
    await jane.silent(0.2)

    await typing(False, "3")  # a change: at once
    assert (await jane.expect("user_typing", timeout=0.5))["data"]["is_typing"] is False
    changed_at = time.monotonic()
    await typing(False, "4")
    await jane.silent(0.2)

    await asyncio.sleep(max(0.0, changed_at + 1.05 - time.monotonic()))
    await typing(False, "5")  # the same state, a second later: broadcast again
    assert (await jane.expect("user_typing"))["data"]["is_typing"] is False
    await jane.silent(0.2)


# --- add_reaction and mark_read ---------------------------------------------------------------


async def test_reaction_with_chat_id_reaches_the_chat(connect: Connect,
                                                      tokens: dict[int, str],
                                                      backend: DevBackend) -> None:
    john, jane, carol, dave = (await connect(tokens[JOHN]), await connect(tokens[JANE]),
                               await connect(tokens[CAROL]), await connect(tokens[DAVE]))
    message_id = await rest_message(backend, tokens[JOHN], GENERAL, "react to me")

    await jane.send("add_reaction", {"message_id": message_id, "emoji": "👍",
                                     "chat_id": GENERAL}, ref="r1")
    got = await answers(jane, "new_reaction", "ack")
    assert got["ack"]["ref"] == "r1" and got["ack"]["data"] == {}
    expected = {"message_id": message_id, "user_id": JANE, "name": NAMES[JANE], "emoji": "👍",
                "chat_id": GENERAL}
    assert got["new_reaction"]["data"] == expected
    for receiver in (john, carol):
        assert (await receiver.expect("new_reaction"))["data"] == expected
    await all_silent(john, jane, carol, dave)


async def test_reaction_without_chat_id_to_a_relayed_message_reaches_the_chat(
        connect: Connect, tokens: dict[int, str]) -> None:
    john, jane, carol, dave = (await connect(tokens[JOHN]), await connect(tokens[JANE]),
                               await connect(tokens[CAROL]), await connect(tokens[DAVE]))
    message_id = await relay(john, [jane, carol], GENERAL, "relayed")

    await carol.send("add_reaction", {"message_id": message_id, "emoji": "🎉"}, ref=5)
    got = await answers(carol, "new_reaction", "ack")
    assert got["ack"]["ref"] == 5
    expected = {"message_id": message_id, "user_id": CAROL, "name": NAMES[CAROL],
                "emoji": "🎉", "chat_id": GENERAL}
    assert got["new_reaction"]["data"] == expected
    for receiver in (john, jane):
        assert (await receiver.expect("new_reaction"))["data"] == expected
    await all_silent(john, jane, carol, dave)


async def test_reaction_to_a_message_of_an_unknown_chat_reaches_only_the_actor(
        connect: Connect, tokens: dict[int, str], backend: DevBackend) -> None:
    john, carol = await connect(tokens[JOHN]), await connect(tokens[CAROL])
    jane_a, jane_b = await connect(tokens[JANE]), await connect(tokens[JANE])
    message_id = await rest_message(backend, tokens[JOHN], GENERAL, "not through the gateway")

    await jane_a.send("add_reaction", {"message_id": message_id, "emoji": "👀"}, ref="r")
    got = await answers(jane_a, "new_reaction", "ack")
    data = got["new_reaction"]["data"]
    assert {k: data[k] for k in ("message_id", "user_id", "name", "emoji")} == {
        "message_id": message_id, "user_id": JANE, "name": NAMES[JANE], "emoji": "👀"}
    assert data.get("chat_id") is None
    assert (await jane_b.expect("new_reaction"))["data"] == data
    await all_silent(john, carol, jane_a, jane_b)


async def test_mark_read_with_chat_id_reaches_the_chat(connect: Connect,
                                                       tokens: dict[int, str],
                                                       backend: DevBackend) -> None:
    john, jane, carol, dave = (await connect(tokens[JOHN]), await connect(tokens[JANE]),
                               await connect(tokens[CAROL]), await connect(tokens[DAVE]))
    first = await rest_message(backend, tokens[JOHN], GENERAL, "one")
    second = await rest_message(backend, tokens[JOHN], GENERAL, "two")

    await jane.send("mark_read", {"message_ids": [first, second], "chat_id": GENERAL},
                    ref="m1")
    got = await answers(jane, "message_read", "ack")
    assert got["ack"]["ref"] == "m1" and got["ack"]["data"] == {}
    expected = {"message_ids": [first, second], "user_id": JANE, "name": NAMES[JANE],
                "chat_id": GENERAL}
    assert got["message_read"]["data"] == expected
    for receiver in (john, carol):
        assert (await receiver.expect("message_read"))["data"] == expected
    await all_silent(john, jane, carol, dave)


async def test_mark_read_without_chat_id_of_a_relayed_message_reaches_the_chat(
        connect: Connect, tokens: dict[int, str]) -> None:
    john, jane, carol, dave = (await connect(tokens[JOHN]), await connect(tokens[JANE]),
                               await connect(tokens[CAROL]), await connect(tokens[DAVE]))
    message_id = await relay(john, [jane, carol], GENERAL, "read me")

    await jane.send("mark_read", {"message_ids": [message_id]}, ref=9)
    got = await answers(jane, "message_read", "ack")
    expected = {"message_ids": [message_id], "user_id": JANE, "name": NAMES[JANE],
                "chat_id": GENERAL}
    assert got["message_read"]["data"] == expected
    for receiver in (john, carol):
        assert (await receiver.expect("message_read"))["data"] == expected
    await all_silent(john, jane, carol, dave)


async def test_mark_read_of_a_message_of_an_unknown_chat_reaches_only_the_actor(
        connect: Connect, tokens: dict[int, str], backend: DevBackend) -> None:
    john, carol = await connect(tokens[JOHN]), await connect(tokens[CAROL])
    jane_a, jane_b = await connect(tokens[JANE]), await connect(tokens[JANE])
    message_id = await rest_message(backend, tokens[JOHN], GENERAL, "direct")

    await jane_a.send("mark_read", {"message_ids": [message_id]}, ref="m")
    got = await answers(jane_a, "message_read", "ack")
    data = got["message_read"]["data"]
    assert {k: data[k] for k in ("message_ids", "user_id", "name")} == {
        "message_ids": [message_id], "user_id": JANE, "name": NAMES[JANE]}
    assert data.get("chat_id") is None
    assert (await jane_b.expect("message_read"))["data"] == data
    await all_silent(john, carol, jane_a, jane_b)


# --- isolation --------------------------------------------------------------------------------


async def test_a_non_member_never_receives_anything_of_the_chat(
        connect: Connect, tokens: dict[int, str], backend: DevBackend) -> None:
    dave = await connect(tokens[DAVE])  # connected the whole time, not in chat 1
    john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])

    relayed = await relay(john, [jane], GENERAL, "members only")
    direct = await rest_message(backend, tokens[JOHN], GENERAL, "direct")
    await jane.send("send_message", {"chat_id": GENERAL, "text": "reply",
                                     "reply_to_id": relayed})
    await jane.send("typing", {"chat_id": GENERAL, "is_typing": True})
    await jane.send("add_reaction", {"message_id": relayed, "emoji": "👍"})
    await jane.send("add_reaction", {"message_id": direct, "emoji": "👍", "chat_id": GENERAL})
    await jane.send("mark_read", {"message_ids": [relayed]})
    await jane.send("mark_read", {"message_ids": [direct], "chat_id": GENERAL})
    await jane.send("typing", {"chat_id": GENERAL, "is_typing": False}, ref="last")
    events = sorted(f["event"] for f in await frames(jane, 6))
    assert events == sorted(["new_message", "new_reaction", "new_reaction", "message_read",
                             "message_read", "ack"]), events
    events = sorted(f["event"] for f in await frames(john, 7))
    assert events == sorted(["new_message", "user_typing", "new_reaction", "new_reaction",
                             "message_read", "message_read", "user_typing"]), events
    await dave.silent(0.5)


# --- errors -----------------------------------------------------------------------------------


def _many(count: int) -> list[int]:
    return list(range(1, count + 1))


# (event, data, code, the message or a part the message must contain)
BACKEND_AND_MEMBERSHIP_ERRORS = [
    ("send_message", {"chat_id": CAROL_DAVE, "text": "hi"}, "FORBIDDEN",
     "Failed to send message: Access denied to this chat"),
    ("send_message", {"chat_id": UNKNOWN_CHAT, "text": "hi"}, "NOT_FOUND",
     "Failed to send message: "),
    ("send_message", {"chat_id": GENERAL, "text": ""}, "VALIDATION_FAILED",
     "Failed to send message: "),
    ("send_message", {"chat_id": GENERAL}, "VALIDATION_FAILED", "Failed to send message: "),
    ("send_message", {"chat_id": GENERAL, "text": "x", "reply_to_id": 999_999},
     "VALIDATION_FAILED", "Failed to send message: "),
    ("typing", {"chat_id": CAROL_DAVE, "is_typing": True}, "NOT_A_MEMBER", ""),
    ("add_reaction", {"message_id": 1, "emoji": "👍", "chat_id": CAROL_DAVE}, "NOT_A_MEMBER",
     ""),
    ("mark_read", {"message_ids": [1], "chat_id": CAROL_DAVE}, "NOT_A_MEMBER", ""),
    ("add_reaction", {"message_id": 999_999, "emoji": "👍"}, "NOT_FOUND",
     "Failed to add reaction: "),
    ("mark_read", {"message_ids": [999_999]}, "NOT_FOUND", "Failed to "),
    ("typing", {"chat_id": UNKNOWN_CHAT, "is_typing": True}, "INVALID_CHAT", ""),
    ("add_reaction", {"message_id": 1, "emoji": "👍", "chat_id": UNKNOWN_CHAT},
     "INVALID_CHAT", ""),
]


@pytest.mark.parametrize(("event", "data", "code", "message"), BACKEND_AND_MEMBERSHIP_ERRORS,
                         ids=[f"{e}-{c}-{i}" for i, (e, _, c, _) in
                              enumerate(BACKEND_AND_MEMBERSHIP_ERRORS)])
async def test_refused_events_get_their_error_with_the_ref(
        connect: Connect, tokens: dict[int, str], event: str, data: dict[str, Any], code: str,
        message: str) -> None:
    john, carol, dave = (await connect(tokens[JOHN]), await connect(tokens[CAROL]),
                         await connect(tokens[DAVE]))
    await john.send(event, data, ref="err-1")
    frame = await john.expect_error(code)
    assert frame["ref"] == "err-1"
    assert frame["data"]["message"].startswith(message), frame
    await all_silent(john, carol, dave)  # nothing was broadcast, no ack followed


@pytest.mark.parametrize("chat_id", [0, -1])
@pytest.mark.parametrize("event", ["send_message", "typing", "add_reaction", "mark_read"])
async def test_non_positive_chat_id_is_invalid_chat(connect: Connect, tokens: dict[int, str],
                                                    event: str, chat_id: int) -> None:
    data = {
        "send_message": {"chat_id": chat_id, "text": "x"},
        "typing": {"chat_id": chat_id, "is_typing": True},
        "add_reaction": {"message_id": 1, "emoji": "👍", "chat_id": chat_id},
        "mark_read": {"message_ids": [1], "chat_id": chat_id},
    }[event]
    john = await connect(tokens[JOHN])
    await john.send(event, data, ref=3)
    frame = await john.expect_error("INVALID_CHAT")
    assert frame["data"]["message"] == "Invalid chat_id"
    assert frame["ref"] == 3


INVALID_JSON_FRAMES = ["not json", "{", "[]", "[1, 2]", "null", "42", '"auth"', "{}",
                       '{"data": {}}', '{"event": 5, "data": {}}', '{"event": null}']


@pytest.mark.parametrize("raw", INVALID_JSON_FRAMES)
async def test_invalid_json(connect: Connect, tokens: dict[int, str], raw: str) -> None:
    john = await connect(tokens[JOHN])
    await john.send_raw(raw)
    frame = await john.expect_error("INVALID_JSON")
    assert frame["data"]["message"] == "Invalid message format"


async def test_invalid_json_object_with_a_ref_echoes_it(connect: Connect,
                                                        tokens: dict[int, str]) -> None:
    john = await connect(tokens[JOHN])
    await john.send_raw('{"event": 5, "data": {}, "ref": "bad-event"}')
    frame = await john.expect_error("INVALID_JSON")
    assert frame.get("ref") == "bad-event", frame


async def test_unknown_event_after_auth(connect: Connect, tokens: dict[int, str]) -> None:
    john = await connect(tokens[JOHN])
    await john.send("dance", {"chat_id": GENERAL}, ref="u")
    frame = await john.expect_error("UNKNOWN_EVENT")
    assert frame["data"]["message"] == "Unknown event type"
    assert frame["ref"] == "u"
    await john.send_raw('{"event": "typing_now"}')
    assert (await john.expect_error("UNKNOWN_EVENT"))["data"]["message"] == "Unknown event type"


NOT_AUTH_EVENTS = [
    ("send_message", {"chat_id": GENERAL, "text": "hi"}),
    ("typing", {"chat_id": GENERAL, "is_typing": True}),
    ("add_reaction", {"message_id": 1, "emoji": "👍"}),
    ("mark_read", {"message_ids": [1]}),
    ("dance", {}),  # unknown events too
    ("send_message", {"chat_id": "not an int"}),  # a malformed payload too
]


@pytest.mark.parametrize(("event", "data"), NOT_AUTH_EVENTS,
                         ids=[f"{e}-{i}" for i, (e, _) in enumerate(NOT_AUTH_EVENTS)])
async def test_every_event_but_auth_requires_auth(connect: Connect, tokens: dict[int, str],
                                                  event: str, data: dict[str, Any]) -> None:
    jane = await connect(tokens[JANE])
    anonymous = await connect()
    await anonymous.send(event, data, ref=11)
    frame = await anonymous.expect_error("AUTH_REQUIRED")
    assert frame["data"]["message"] == "Authentication required"
    assert frame["ref"] == 11
    await all_silent(anonymous, jane)
    assert (await anonymous.auth(tokens[JOHN]))["user_id"] == JOHN  # and it is still open


INVALID_PAYLOADS = [
    ("send_message", {}, "chat_id"),
    ("send_message", {"chat_id": "1", "text": "x"}, "chat_id"),
    ("send_message", {"chat_id": 1.5, "text": "x"}, "chat_id"),
    ("send_message", {"chat_id": True, "text": "x"}, "chat_id"),
    ("send_message", {"chat_id": GENERAL, "text": 5}, "text"),
    ("send_message", {"chat_id": GENERAL, "text": "x", "reply_to_id": 0}, "reply_to_id"),
    ("send_message", {"chat_id": GENERAL, "text": "x", "attachment_ids": "1"},
     "attachment_ids"),
    ("send_message", {"chat_id": GENERAL, "attachment_ids": [0]}, "attachment_ids"),
    ("typing", {"chat_id": GENERAL}, "is_typing"),
    ("typing", {"chat_id": GENERAL, "is_typing": "yes"}, "is_typing"),
    ("typing", {"is_typing": True}, "chat_id"),
    ("add_reaction", {"message_id": 0, "emoji": "👍"}, "message_id"),
    ("add_reaction", {"message_id": "1", "emoji": "👍"}, "message_id"),
    ("add_reaction", {"message_id": 1}, "emoji"),
    ("add_reaction", {"message_id": 1, "emoji": 7}, "emoji"),
    ("add_reaction", {"message_id": 1, "emoji": "👍", "chat_id": "1"}, "chat_id"),
    ("mark_read", {}, "message_ids"),
    ("mark_read", {"message_ids": []}, "message_ids"),
    ("mark_read", {"message_ids": _many(101)}, "message_ids"),
    ("mark_read", {"message_ids": [1, "2"]}, "message_ids"),
    ("mark_read", {"message_ids": [-1]}, "message_ids"),
    ("auth", {}, "token"),
    ("auth", {"token": 5}, "token"),
]


@pytest.mark.parametrize(("event", "data", "field"), INVALID_PAYLOADS,
                         ids=[f"{e}-{f}-{i}" for i, (e, _, f) in enumerate(INVALID_PAYLOADS)])
async def test_invalid_payload_names_the_field(connect: Connect, tokens: dict[int, str],
                                               event: str, data: dict[str, Any],
                                               field: str) -> None:
    john = await connect(tokens[JOHN])
    await john.send(event, data, ref="p")
    frame = await john.expect_error("INVALID_PAYLOAD")
    assert field in frame["data"]["message"], frame
    assert frame["ref"] == "p"


async def test_invalid_payload_when_data_is_missing_or_not_an_object(
        connect: Connect, tokens: dict[int, str]) -> None:
    john = await connect(tokens[JOHN])
    await john.send_raw(json.dumps({"event": "typing", "ref": 1}))
    frame = await john.expect_error("INVALID_PAYLOAD")
    assert "data" in frame["data"]["message"] and frame["ref"] == 1
    await john.send_raw(json.dumps({"event": "typing", "data": [1], "ref": 2}))
    frame = await john.expect_error("INVALID_PAYLOAD")
    assert "data" in frame["data"]["message"] and frame["ref"] == 2


async def test_error_messages_reveal_no_internals(connect: Connect,
                                                  tokens: dict[int, str],
                                                  backend: DevBackend) -> None:
    john = await connect(tokens[JOHN])
    bad: list[tuple[str, dict[str, Any]]] = [
        ("send_message", {"chat_id": CAROL_DAVE, "text": "x"}),
        ("send_message", {"chat_id": "x"}),
        ("add_reaction", {"message_id": 999_999, "emoji": "x"}),
    ]
    for event, data in bad:
        await john.send(event, data)
        message = (await john.expect("error"))["data"]["message"]
        assert backend.url not in message and "127.0.0.1" not in message
        assert "Traceback" not in message and "Error(" not in message


async def test_malformed_events_never_close_the_connection(connect: Connect,
                                                           tokens: dict[int, str]) -> None:
    client = await connect()
    jane = await connect(tokens[JANE])
    before_auth = ["nope", '{"event": "dance"}', json.dumps({"event": "typing", "data": {}}),
                   "[]", json.dumps({"event": "send_message", "data": {"chat_id": 1}})]
    for raw in before_auth:
        await client.send_raw(raw)
    for _ in before_auth:
        await client.expect("error")
    await client.auth(tokens[JOHN])

    bad = ["not json", "{", "[]", '{"event": 1}', '{"event": "dance", "data": {}}',
           json.dumps({"event": "typing", "data": {"chat_id": "x", "is_typing": True}}),
           json.dumps({"event": "send_message", "data": {"chat_id": 0, "text": "x"}}),
           json.dumps({"event": "mark_read", "data": {"message_ids": []}}),
           json.dumps({"event": "add_reaction", "data": {"message_id": -5, "emoji": "x"}}),
           json.dumps({"event": "typing", "data": {"chat_id": CAROL_DAVE, "is_typing": True}})]
    assert len(bad) == 10
    for raw in bad:
        await client.send_raw(raw)
    for _ in bad:
        await client.expect("error")

    await client.send("send_message", {"chat_id": GENERAL, "text": "still here"}, ref="ok")
    got = await answers(client, "new_message", "ack")
    assert got["ack"]["ref"] == "ok"
    assert (await jane.expect("new_message"))["data"]["text"] == "still here"
