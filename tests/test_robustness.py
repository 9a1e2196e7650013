"""Robustness: what a client (or /health, /metrics) sees when other clients misbehave or the
gateway is under pressure. Each test pins one defect that was fixed:

1. a client that pings but never reads gets no pongs while its socket is full (bounded memory);
2. a client that sends CLOSE and stops reading is cut after the grace period and frees its slot;
3. deeply nested JSON is INVALID_JSON and the connection stays open;
4. a fresh ``auth`` after AUTH_EXPIRED never waits behind a write in flight;
5. a connection the gateway closes frees the user's slot at once;
6. ``add_reaction`` / ``mark_read`` whose ``chat_id`` is not the relayed message's chat are refused;
7. SIGTERM while a message waits for its member list tells the sender which message was lost;
8. the close frame reaches a client that was still sending when the gateway closed (no reset);
9. a client that breaks the protocol is not logged as a server error.

Raw frames are sent with the minimal RFC 6455 client of ``rawws.py`` (:class:`RawClient`), so
that a test can stop reading, set a tiny receive window, or send what a library would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
import websockets
from conftest import (
    CAROL,
    GENERAL,
    JANE,
    JOHN,
    JOHN_JANE,
    Client,
    MakeGateway,
    StartProcess,
    backend_post,
    client_factory,
    free_port,
    http_get,
    metric_value,
    metrics_text,
    set_fault,
)
from rawws import (
    CLOSE,
    CONT,
    PING,
    TEXT,
    Collector,
    RawClient,
    RawClients,
    eventually,
    frame,
    wait_for_tokens,
)

from gogate.devbackend import DevBackend
from gogate.log import configure
from gogate.server import Gateway

# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
async def raw_clients() -> AsyncIterator[RawClients]:
    clients = RawClients()
    yield clients
    clients.close()


PAD = "x" * 3000  # a 3 KB chat message


async def flood(sender: Client, sender_events: Collector, count: int, *, batch: int = 20,
                until: Callable[[], bool] | None = None) -> int:
    """Send ``count`` 3 KB messages to chat 1 in batches, waiting for each batch's acks (or
    stopping early once ``until()`` holds, twice 0.2 s apart). Returns how many were sent."""
    acks = len(sender_events.of("ack"))
    sent = 0
    while sent < count:
        last = min(sent + batch, count)
        for n in range(sent, last):
            await sender.send("send_message", {"chat_id": GENERAL, "text": f"{n} {PAD}"},
                              ref=n)
        sent = last
        await eventually(lambda want=acks + sent: len(sender_events.of("ack")) >= want
                         or bool(sender_events.of("error")), 15.0, f"acks up to {sent}")
        assert not sender_events.of("error"), sender_events.of("error")[:1]
        if until is not None and until():
            await asyncio.sleep(0.2)  # the kernel's buffers may absorb a pause or two
            if until():
                break
    return sent


def connection_of(gateway: Gateway, user_id: int) -> Any:
    return next(c for c in gateway.registry.open if c.user_id == user_id)


async def health_connections(gateway: Gateway) -> int:
    status, body, _ = await http_get(f"http://127.0.0.1:{gateway.port}/health")
    assert status == 200
    count: int = msgspec.json.decode(body)["connections"]
    return count


async def mint_token(backend: DevBackend, user_id: int, ttl: float) -> str:
    token: str = (await backend_post(backend, "/api/dev/tokens",
                                     {"user_id": user_id, "ttl": ttl}))["token"]
    return token


# Jane reads slowly; the gateway buffers little in the transport and never closes her for
# being slow unless a test asks for it.
STALL = {"write_wait": 30.0, "send_queue_size": 1000, "write_buffer_size": 1024,
         "rate_limit": 0}


async def stall_jane(gateway: Gateway, raw: RawClient, john: Client, johns: Collector,
                     tokens: dict[int, str]) -> Any:
    """Authenticate Jane on ``raw`` (which then reads nothing) and flood chat 1 until her
    socket is full and her sink is paused. Returns her gateway-side connection."""
    await raw.auth(tokens[JANE])
    conn = connection_of(gateway, JANE)
    await flood(john, johns, 200, batch=5, until=lambda: conn.sink.paused)
    assert conn.sink.paused, "the non-reading client's socket never filled"
    return conn


# --- 1. pings from a client that does not read -------------------------------------------------


async def test_pings_from_a_client_that_does_not_read_are_not_buffered(
        make_gateway: MakeGateway, raw_clients: Any, tokens: dict[int, str]) -> None:
    """20,000 pings (2.5 MB of pongs to answer) into a full socket: the gateway's write buffer
    stays small and the connection stays paused."""
    gateway = await make_gateway(**STALL)
    async with client_factory(gateway.port) as connect:
        raw = await raw_clients(gateway.port, rcvbuf=4096)
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        conn = await stall_jane(gateway, raw, john, johns, tokens)
        johns.stop()
        transport = conn.transport.underlying_transport
        before = transport.get_write_buffer_size()

        ping = frame(PING, b"p" * 125)
        raw.writer.write(ping * 20_000)
        await asyncio.wait_for(raw.writer.drain(), 10)
        # A text frame after the pings: once it is counted, every ping has been read.
        raw.send_event("typing", {"chat_id": GENERAL, "is_typing": True}, ref="after-pings")

        async def typing_seen() -> float:
            return metric_value(await metrics_text(gateway), "gogate_events_in_total",
                                event="typing")

        deadline = time.monotonic() + 10
        while await typing_seen() < 1:
            assert time.monotonic() < deadline, "the gateway never read past the pings"
            await asyncio.sleep(0.05)

        after = transport.get_write_buffer_size()
        assert conn in gateway.registry.open
        assert conn.sink.paused
        assert after - before < 1_000_000, (before, after)
        assert after < 1_000_000, (before, after)


# --- 2. a client that closes and stops reading ----------------------------------------------


async def test_client_close_without_reading_is_cut_and_frees_the_slot(
        make_gateway: MakeGateway, raw_clients: Any, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(max_connections_per_user=1, **STALL)
    async with client_factory(gateway.port) as connect:
        raw = await raw_clients(gateway.port, rcvbuf=4096)
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        conn = await stall_jane(gateway, raw, john, johns, tokens)
        assert await health_connections(gateway) == 2

        raw.send(frame(CLOSE, struct.pack("!H", 1000)))  # and still reads nothing
        closed_at = time.monotonic()
        await eventually(lambda: conn.closing, 2.0, "the close frame to be read")

        # Jane's slot is free at once, though her old socket has not flushed.
        jane = await connect()
        await jane.send("auth", {"token": tokens[JANE]}, ref="again")
        got = await jane.recv()
        assert got["event"] == "auth_success", got

        # The old connection is cut after the 2 s grace period: /health counts John and the
        # new Jane only.
        while await health_connections(gateway) != 2 or conn in gateway.registry.open:
            assert time.monotonic() - closed_at < 3.5, "the closed connection was never cut"
            await asyncio.sleep(0.05)

        # The new connection receives chat messages.
        await john.send("send_message", {"chat_id": GENERAL, "text": "welcome back"})
        got = await jane.expect("new_message")
        assert got["data"]["text"] == "welcome back"
        johns.stop()


# --- 3. deeply nested JSON --------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("text", [
    pytest.param('{"event":"typing","data":{"chat_id":1,"is_typing":true,"x":' + DEEP + "}}",
                 id="in-data"),
    pytest.param('{"event":"typing","data":{"chat_id":1,"is_typing":true},"ref":' + DEEP + "}",
                 id="in-ref"),
])
async def test_deeply_nested_json_is_invalid_json_and_connection_stays(
        gateway: Gateway, tokens: dict[int, str], text: str) -> None:
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        await john.send_raw(text)
        await john.expect_error("INVALID_JSON")
        await john.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="still-here")
        ack = await john.expect("ack")
        assert ack["ref"] == "still-here"


# --- 4. re-auth while a write is in flight ----------------------------------------------------


async def test_fresh_auth_is_not_blocked_behind_a_write_in_flight(
        make_gateway: MakeGateway, backend: DevBackend, tokens: dict[int, str]) -> None:
    """The token expires while a send_message is still being delivered (its member list is
    slow). The fresh auth is answered at once, the connection survives the AUTH_TIMEOUT
    deadline, and the message's ack still arrives."""
    gateway = await make_gateway(auth_timeout=1.0, rate_limit=0)
    short = await mint_token(backend, JOHN, 1.5)
    fresh = await mint_token(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        john = await connect(short)
        # The backend accepts the message at once (the token is still valid) but the member
        # list, not cached yet, takes 4.5 s: the write stays in flight past the expiry.
        await set_fault(backend, delay=4.5, match="/api/internal/v1/chats")
        await john.send("send_message", {"chat_id": GENERAL, "text": "slow"}, ref="slow")

        expired = await john.expect_error("AUTH_EXPIRED", timeout=4.0)
        assert "ref" not in expired
        expired_at = time.monotonic()
        await john.send("auth", {"token": fresh}, ref="fresh")
        got = await john.recv(timeout=3.0)
        assert got["event"] == "auth_success", got
        assert got["ref"] == "fresh"
        assert time.monotonic() - expired_at < 1.0, "the fresh auth waited behind the write"

        message = await john.expect("new_message", timeout=6.0)
        assert message["data"]["text"] == "slow"
        ack = await john.expect("ack", timeout=2.0)
        assert ack["ref"] == "slow"
        assert ack["data"] == {"message_id": message["data"]["id"]}
        # The ack came after the AUTH_TIMEOUT deadline: the connection was not closed then.
        assert time.monotonic() - expired_at > 1.0 + 0.3
        await john.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="alive")
        assert (await john.expect("ack"))["ref"] == "alive"


async def test_refusal_of_the_replaced_token_does_not_close_a_reauthenticated_connection(
        make_gateway: MakeGateway, backend: DevBackend, tokens: dict[int, str]) -> None:
    """The POST itself is slow: the backend checks the old token only after the delay, when it
    has expired, and refuses the write (AUTH_EXPIRED for that event is fair). The connection
    already holds a fresh token, so it must not be closed for it."""
    gateway = await make_gateway(auth_timeout=1.0, rate_limit=0)
    short = await mint_token(backend, JOHN, 1.5)
    fresh = await mint_token(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        john = await connect(short)
        await set_fault(backend, delay=4.0, match="/api/v1/messages")
        await john.send("send_message", {"chat_id": GENERAL, "text": "slow"}, ref="slow")
        await john.expect_error("AUTH_EXPIRED", timeout=4.0)
        expired_at = time.monotonic()
        await john.send("auth", {"token": fresh}, ref="fresh")
        got = await john.recv(timeout=3.0)
        assert got["event"] == "auth_success", got
        assert time.monotonic() - expired_at < 1.0, "the fresh auth waited behind the write"

        outcome = await john.recv(timeout=6.0)  # the write's answer: ack or AUTH_EXPIRED
        assert outcome.get("ref") == "slow", outcome
        assert outcome["event"] == "ack" or outcome["data"]["code"] == "AUTH_EXPIRED", outcome
        await john.silent(within=1.5)  # past AUTH_TIMEOUT: no close
        await john.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="alive")
        assert (await john.expect("ack"))["ref"] == "alive"


# --- 5. a closed connection frees the user's slot at once ------------------------------------


async def test_expired_token_close_frees_the_slot_at_once(
        make_gateway: MakeGateway, backend: DevBackend, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(max_connections_per_user=1, auth_timeout=0.3)
    short = await mint_token(backend, JOHN, 1)
    async with client_factory(gateway.port) as connect:
        old = await connect(short)
        await old.expect_error("AUTH_EXPIRED", timeout=3.0)
        assert await old.closed(timeout=2.0) == 1008
        new = await connect()
        await new.send("auth", {"token": tokens[JOHN]}, ref="again")
        got = await new.recv()
        assert got["event"] == "auth_success", got


async def test_slow_consumer_close_frees_the_slot_before_the_socket_is_cut(
        make_gateway: MakeGateway, raw_clients: Any, tokens: dict[int, str]) -> None:
    """Jane's stalled connection is closed 1013; its socket cannot flush, yet a new connection
    of hers is accepted at once (not only after the grace period)."""
    gateway = await make_gateway(max_connections_per_user=1,
                                 **{**STALL, "send_queue_size": 8})
    async with client_factory(gateway.port) as connect:
        raw = await raw_clients(gateway.port, rcvbuf=4096)
        await raw.auth(tokens[JANE])  # and from now on reads nothing
        old = connection_of(gateway, JANE)
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        await flood(john, johns, 200, batch=5, until=lambda: old.closing)
        johns.stop()
        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_closes_total", reason="slow_consumer") == 1
        assert old in gateway.registry.open, "the test needs a socket that has not flushed"

        jane = await connect()
        await jane.send("auth", {"token": tokens[JANE]}, ref="again")
        got = await jane.recv()
        assert got["event"] == "auth_success", got
        assert old in gateway.registry.open  # the old socket was still not cut


# --- 6. reactions and receipts must match the relayed message's chat ------------------------


@pytest.mark.parametrize("event, data", [
    pytest.param("add_reaction", {"emoji": "👍"}, id="add_reaction"),
    pytest.param("mark_read", {}, id="mark_read"),
])
async def test_chat_id_not_matching_the_relayed_message_is_refused(
        gateway: Gateway, tokens: dict[int, str], event: str, data: dict[str, Any]) -> None:
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        jane = await connect(tokens[JANE])
        carol = await connect(tokens[CAROL])
        await john.send("send_message", {"chat_id": JOHN_JANE, "text": "just us"}, ref="m")
        message_id = (await john.expect("new_message"))["data"]["id"]
        assert (await john.expect("ack"))["data"] == {"message_id": message_id}
        await jane.expect("new_message")

        body = dict(data, chat_id=GENERAL)
        if event == "add_reaction":
            body["message_id"] = message_id
        else:
            body["message_ids"] = [message_id]
        await john.send(event, body, ref="wrong-chat")
        error = await john.expect_error("INVALID_PAYLOAD")
        assert error["ref"] == "wrong-chat"
        await carol.silent(within=0.5)
        await jane.silent(within=0.1)
        await john.silent(within=0.1)


# --- 7. shutdown while a message waits for its member list ------------------------------------


async def test_shutdown_tells_the_sender_about_an_undelivered_message(
        gateway_process: StartProcess) -> None:
    backend_url = f"http://127.0.0.1:{free_port()}"
    proc = gateway_process(env={"BACKEND_API_URL": backend_url, "SHUTDOWN_TIMEOUT": "3"},
                           args=["--dev"])
    tokens = await wait_for_tokens(proc)
    async with client_factory(proc.port) as connect:
        john = await connect(tokens[JOHN])
        # No member list was ever fetched, and now none can be: the message is saved by the
        # backend, then its delivery retries.
        async with aiohttp.ClientSession() as session, session.put(
                backend_url + "/api/dev/faults",
                json={"status": 500, "match": "/api/internal/v1/chats"}) as response:
            assert response.status < 300, await response.text()
        await john.send("send_message", {"chat_id": GENERAL, "text": "lost?"}, ref="m1")
        await asyncio.sleep(0.5)
        proc.signal(signal.SIGTERM)
        signalled = time.monotonic()

        events: list[dict[str, Any]] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                events.append(await john.recv(timeout=6.0))
        assert john.ws.close_code == 1001, (john.ws.close_code, events)
        errors = [e for e in events if e["event"] == "error"]
        assert len(errors) == 1, events
        error = errors[0]
        assert error["data"]["code"] == "BACKEND_UNAVAILABLE", error
        assert error.get("ref") == "m1", error
        assert re.search(r"\b[Mm]essage \d+\b", error["data"]["message"]), error
        assert not [e for e in events if e["event"] == "ack"], events

        exit_code = await asyncio.to_thread(proc.wait, 10)
        elapsed = time.monotonic() - signalled
        assert exit_code == 0, proc.output()
        assert elapsed < 4.0, f"exited {elapsed:.1f}s after SIGTERM with SHUTDOWN_TIMEOUT=3"


# --- 8. the close frame reaches a client that is still sending -----------------------------


async def test_close_frame_reaches_a_client_whose_data_is_still_in_flight(
        gateway: Gateway, raw_clients: Any) -> None:
    """The gateway fails the connection (1002: a continuation with nothing to continue) while a
    megabyte the client sent behind it is still arriving, and more follows. The client, reading
    only afterwards, gets the close frame rather than a reset; once it answers, the gateway ends
    the stream cleanly, long before the grace period."""
    raw = await raw_clients(gateway.port)
    conn = next(iter(gateway.registry.open))
    raw.writer.transport.pause_reading()  # the close frame waits in the client's socket
    raw.send(frame(CONT, b"", fin=False), *[frame(TEXT, b"x" * 4000)] * 250)
    await eventually(lambda: conn.closing, 2.0, "the gateway to fail the connection")
    await asyncio.sleep(0.1)
    raw.send(*[frame(TEXT, b"x" * 4000)] * 25)  # sent after the close frame left the gateway
    await asyncio.sleep(0.1)
    raw.writer.transport.resume_reading()
    assert await raw.close_code() == 1002
    raw.send(frame(CLOSE, struct.pack("!H", 1002)))
    try:
        rest = await asyncio.wait_for(raw.reader.read(), 1.0)
    except ConnectionError as exc:
        raise AssertionError("the gateway reset the connection") from exc
    assert rest == b""
    await eventually(lambda: conn not in gateway.registry.open, 1.0, "the socket to be let go")


# --- 9. a client's protocol violation is not a server error ---------------------------------


@pytest.fixture
def gateway_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the gateway's own logging setup (text, level info) writes, caught in this process;
    the logging setup of the test run is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("gogate", "picows", "aiohttp.access")
    levels = {name: logging.getLogger(name).level for name in names}
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure("info", "text")
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


async def test_a_client_breaking_the_protocol_is_not_logged_as_an_error(
        gateway: Gateway, raw_clients: Any, gateway_log: io.StringIO) -> None:
    raw = await raw_clients(gateway.port)
    raw.send(frame(0x3, b"?"))  # an opcode the protocol reserves: the frame parser fails it
    assert await raw.close_code() == 1002
    await eventually(lambda: not gateway.registry.open, 2.0, "the connection to end")
    errors = [line for line in gateway_log.getvalue().splitlines() if " ERROR " in line]
    assert errors == []
    # picows' other errors (its own failures) are still logged as errors.
    logging.getLogger("picows.server").error("WS parser failure, initiate disconnect")
    assert " ERROR picows.server WS parser failure" in gateway_log.getvalue()
