"""Connection lifetime (docs/protocol.md, "Connection lifetime"): close codes for protocol
violations, heartbeats, slow consumers, and the drain on SIGTERM / SIGINT.

Protocol violations are sent with the minimal RFC 6455 client of ``rawws.py``
(:class:`RawClient`): frames are built by hand, so that a test can send what no well-behaved
library would.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import (
    CAROL,
    GENERAL,
    JANE,
    JOHN,
    Client,
    MakeGateway,
    StartProcess,
    client_factory,
    free_port,
    metric_value,
    metrics_text,
)
from rawws import (
    BINARY,
    CONT,
    PING,
    PONG,
    TEXT,
    Collector,
    RawClients,
    event_bytes,
    eventually,
    frame,
    wait_for_tokens,
)

import gogate_fast
from gogate.devbackend import DevBackend
from gogate.server import Gateway

# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def raw_clients() -> Any:
    clients = RawClients()
    yield clients
    clients.close()


# --- message size -------------------------------------------------------------------------

LIMIT = 1000


@pytest.fixture
async def small_gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(max_message_size=LIMIT, rate_limit=0)


async def test_text_message_over_the_limit_is_closed_1009(small_gateway: Gateway,
                                                          raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(TEXT, b"x" * (LIMIT + 1)))
    assert await raw.close_code() == 1009


async def test_oversized_frame_is_refused_from_its_header(small_gateway: Gateway,
                                                          raw_clients: Any) -> None:
    """1009 comes before the message is buffered: the header alone, claiming 1 GiB, is enough."""
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(TEXT, b"", length=2**30))
    assert await raw.close_code(timeout=3) == 1009


async def test_message_at_the_limit_is_read(small_gateway: Gateway, raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    body = event_bytes("typing", {"chat_id": GENERAL, "is_typing": True, "pad": ""})
    body = body.replace(b'"pad": ""', b'"pad": "' + b"p" * (LIMIT - len(body)) + b'"')
    assert len(body) == LIMIT
    raw.send(frame(TEXT, body))
    error = await raw.expect("error")
    assert error["data"]["code"] == "AUTH_REQUIRED"


async def test_fragments_summing_past_the_limit_are_closed_1009(small_gateway: Gateway,
                                                                raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    part = b"x" * 400  # each fragment well under the limit, three of them over it
    raw.send(frame(TEXT, b'{"event":"typing","data":{"p":"' + part, fin=False),
             frame(CONT, part, fin=False), frame(CONT, part + b'"}}'))
    assert await raw.close_code() == 1009


async def test_fragmented_message_is_reassembled(small_gateway: Gateway, raw_clients: Any,
                                                 tokens: dict[int, str]) -> None:
    async with client_factory(small_gateway.port) as connect:
        jane = await connect(tokens[JANE])
        raw = await raw_clients(small_gateway.port)
        await raw.auth(tokens[JOHN])
        body = event_bytes("send_message", {"chat_id": GENERAL, "text": "in three parts"},
                           ref="frag")
        raw.send(frame(TEXT, body[:10], fin=False), frame(CONT, body[10:30], fin=False),
                 frame(CONT, body[30:]))
        got = await jane.expect("new_message")
        assert got["data"]["text"] == "in three parts"
        assert got["data"]["user"]["id"] == JOHN
        echo = await raw.expect("new_message")
        assert echo["data"]["id"] == got["data"]["id"]
        ack = await raw.expect("ack")
        assert ack["ref"] == "frag" and ack["data"] == {"message_id": got["data"]["id"]}


async def test_fragmented_message_with_a_ping_between_fragments(small_gateway: Gateway,
                                                                raw_clients: Any,
                                                                tokens: dict[int, str]) -> None:
    """Control frames may come between fragments (RFC 6455 5.4)."""
    raw = await raw_clients(small_gateway.port)
    await raw.auth(tokens[JOHN])
    body = event_bytes("typing", {"chat_id": GENERAL, "is_typing": True}, ref=7)
    raw.send(frame(TEXT, body[:5], fin=False), frame(PING, b"between"),
             frame(CONT, body[5:]))
    fin, opcode, payload = await asyncio.wait_for(raw.read_frame(), 5)
    assert (fin, opcode, payload) == (True, PONG, b"between")
    ack = await raw.expect("ack")
    assert ack["ref"] == 7


async def test_invalid_utf8_is_closed_1007(small_gateway: Gateway, raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(TEXT, b'{"event":"auth","data":{"token":"\xff\xfe"}}'))
    assert await raw.close_code() == 1007


async def test_invalid_utf8_across_fragments_is_closed_1007(small_gateway: Gateway,
                                                            raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    # "\xe2\x82" starts a three-byte sequence; the next fragment breaks it with "(".
    raw.send(frame(TEXT, b'{"event":"auth","data":{"token":"\xe2\x82', fin=False),
             frame(CONT, b'("}}'))
    assert await raw.close_code() == 1007


async def test_utf8_split_across_fragments_is_valid(small_gateway: Gateway, raw_clients: Any,
                                                    tokens: dict[int, str]) -> None:
    """A multi-byte character cut between two fragments is not an error."""
    async with client_factory(small_gateway.port) as connect:
        jane = await connect(tokens[JANE])
        raw = await raw_clients(small_gateway.port)
        await raw.auth(tokens[JOHN])
        body = event_bytes("send_message", {"chat_id": GENERAL, "text": "€uro"})
        body = body.replace(b"\\u20ac", "€".encode())
        cut = body.index("€".encode()) + 1
        raw.send(frame(TEXT, body[:cut], fin=False), frame(CONT, body[cut:]))
        got = await jane.expect("new_message")
        assert got["data"]["text"] == "€uro"


async def test_binary_frame_is_closed_1003(small_gateway: Gateway, raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(BINARY, b'{"event":"auth","data":{}}'))
    assert await raw.close_code() == 1003


async def test_fragmented_binary_message_is_closed_1003(small_gateway: Gateway,
                                                        raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(BINARY, b'{"event":', fin=False), frame(CONT, b'"auth"}'))
    assert await raw.close_code() == 1003


@pytest.mark.parametrize("frames", [
    pytest.param([frame(TEXT, b"{}", rsv=4)], id="rsv1"),
    pytest.param([frame(TEXT, b"{}", rsv=2)], id="rsv2"),
    pytest.param([frame(TEXT, b"{", fin=False), frame(CONT, b"}", rsv=4)],
                 id="rsv1-on-continuation"),
    pytest.param([frame(PING, b"x", rsv=4)], id="rsv1-on-ping"),
    pytest.param([frame(PONG, b"x", rsv=4)], id="rsv1-on-pong"),
    pytest.param([bytes((0x81, 2)) + b"{}"], id="unmasked-frame"),
    pytest.param([frame(0x3, b"{}")], id="opcode-0x3"),
    pytest.param([frame(0xB, b"")], id="opcode-0xB"),
    pytest.param([frame(CONT, b'{"event":"auth"}')], id="orphan-continuation"),
    pytest.param([frame(TEXT, b'{"event":', fin=False), frame(TEXT, b"{}")],
                 id="text-inside-fragmented-message"),
    pytest.param([frame(PING, b"x", fin=False)], id="fragmented-ping"),
    pytest.param([frame(PING, b"x" * 126)], id="ping-126-bytes"),
])
async def test_protocol_violation_is_closed_1002(small_gateway: Gateway, raw_clients: Any,
                                                 tokens: dict[int, str],
                                                 frames: list[bytes]) -> None:
    raw = await raw_clients(small_gateway.port)
    await raw.auth(tokens[JOHN])
    raw.send(*frames)
    try:
        code = await raw.close_code(timeout=3.0)
    except TimeoutError:
        pytest.fail("the connection stayed open after the violation")
    assert code == 1002


async def test_protocol_violation_before_auth_is_closed_1002(small_gateway: Gateway,
                                                             raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(CONT, b"{}"))
    assert await raw.close_code() == 1002


async def test_client_ping_gets_a_pong(small_gateway: Gateway, raw_clients: Any) -> None:
    raw = await raw_clients(small_gateway.port)
    raw.send(frame(PING, b"are you there"))
    assert await asyncio.wait_for(raw.read_frame(), 5) == (True, PONG, b"are you there")


async def test_websockets_ping_is_answered(gateway: Gateway, tokens: dict[int, str]) -> None:
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])
        latency = await asyncio.wait_for(await client.ws.ping(b"hello"), 5)
        assert latency >= 0


# --- clients that leave -----------------------------------------------------------------------

CROWD = 300  # several times the sockets the gateway closes per turn of its loop


async def test_crowd_leaving_at_once_is_let_go_and_the_others_keep_receiving(
        make_gateway: MakeGateway, raw_clients: RawClients, tokens: dict[int, str]) -> None:
    """A network blip: hundreds of clients end their streams in the same instant. Every one of
    them is let go (its slot too), and the connections that stayed are served throughout."""
    gateway = await make_gateway(max_connections_per_user=1, rate_limit=0)
    crowd = [await raw_clients(gateway.port) for _ in range(CROWD)]
    await crowd[0].auth(tokens[CAROL])
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        await eventually(lambda: len(gateway.registry.open) == CROWD + 2, 5.0, "the crowd")

        for client in crowd:
            client.close()  # the end of its stream, all in one turn
        await john.send("send_message", {"chat_id": GENERAL, "text": "still here"}, ref=1)
        assert (await jane.expect("new_message"))["data"]["text"] == "still here"
        await eventually(lambda: len(gateway.registry.open) == 2, 5.0,
                         "every client that left to be let go")

        carol = await connect()  # Carol's one slot is free again
        await carol.send("auth", {"token": tokens[CAROL]})
        assert (await carol.recv())["event"] == "auth_success"


async def test_client_that_ends_its_stream_sees_the_socket_closed(
        make_gateway: MakeGateway, raw_clients: RawClients, tokens: dict[int, str]) -> None:
    """A client that shuts down its sending side (half-close) is answered by the end of the
    gateway's stream, and its user is counted offline."""
    gateway = await make_gateway()
    client = await raw_clients(gateway.port)
    await client.auth(tokens[JOHN])
    client.writer.write_eof()
    assert await client.close_code() is None  # the socket ended, no close frame
    await eventually(lambda: not gateway.registry.open, 5.0, "the connection to be let go")


# --- heartbeat ------------------------------------------------------------------------------

HEARTBEAT = {"ping_period": 0.3, "pong_wait": 0.8}


async def test_client_answering_pings_stays_connected(make_gateway: MakeGateway,
                                                      tokens: dict[int, str]) -> None:
    gateway = await make_gateway(**HEARTBEAT)
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])  # websockets answers pings by itself
        await client.silent(within=2.0)
        await client.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="alive")
        assert (await client.expect("ack"))["ref"] == "alive"


async def test_heartbeat_reaches_every_connection_each_tick(make_gateway: MakeGateway,
                                                            raw_clients: RawClients) -> None:
    """The heartbeat visits the connections a slice at a time; each one is still checked every
    tick: 40 clients that never authenticate are all closed for it, on time."""
    gateway = await make_gateway(auth_timeout=0.5)  # a tick of 0.1 s
    silent = [await raw_clients(gateway.port) for _ in range(40)]
    started = time.monotonic()
    codes = await asyncio.gather(*(client.close_code(timeout=3.0) for client in silent))
    assert codes == [1008] * len(silent)  # authentication timeout
    assert time.monotonic() - started < 1.5


async def test_server_pings_every_ping_period(make_gateway: MakeGateway, raw_clients: Any,
                                              tokens: dict[int, str]) -> None:
    gateway = await make_gateway(ping_period=0.3, pong_wait=5.0)
    raw = await raw_clients(gateway.port)
    await raw.auth(tokens[JOHN])
    pings = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            _, opcode, payload = await asyncio.wait_for(raw.read_frame(), 0.2)
        except TimeoutError:
            continue
        if opcode == PING:
            pings += 1
            raw.send(frame(PONG, payload))
    assert 3 <= pings <= 9, pings


async def test_silent_client_is_dropped_after_pong_wait(make_gateway: MakeGateway,
                                                        raw_clients: Any,
                                                        tokens: dict[int, str]) -> None:
    gateway = await make_gateway(**HEARTBEAT)
    raw = await raw_clients(gateway.port)
    await raw.auth(tokens[JOHN])
    silent_since = time.monotonic()
    await raw.close_code(timeout=5.0)  # never answers the pings it reads
    elapsed = time.monotonic() - silent_since
    # (the contract fixes no close code here; gogate sends 1001)
    assert 0.5 <= elapsed <= 1.8, elapsed


async def test_any_inbound_frame_keeps_the_connection(make_gateway: MakeGateway,
                                                      raw_clients: Any,
                                                      tokens: dict[int, str]) -> None:
    """No pong is ever sent, but text frames arrive: the connection stays."""
    gateway = await make_gateway(rate_limit=0, **HEARTBEAT)
    raw = await raw_clients(gateway.port)
    await raw.auth(tokens[JOHN])
    pings_seen = 0
    for n in range(10):  # 2.5 s, three times PONG_WAIT
        raw.send_event("typing", {"chat_id": GENERAL, "is_typing": n % 2 == 0}, ref=n)
        deadline = time.monotonic() + 0.25
        while time.monotonic() < deadline:
            try:
                _, opcode, payload = await asyncio.wait_for(
                    raw.read_frame(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if opcode == PING:
                pings_seen += 1
            else:
                assert json.loads(payload) == {"event": "ack", "ref": n, "data": {}}
    assert pings_seen >= 3  # the server did ping, and got no pong
    raw.send_event("typing", {"chat_id": GENERAL, "is_typing": True}, ref="last")
    assert (await raw.expect("ack"))["ref"] == "last"


# --- slow consumers -------------------------------------------------------------------------

SLOW = {"send_queue_size": 8, "write_buffer_size": 1024, "rate_limit": 0}
PAD = "x" * 3000


def seq_text(n: int) -> str:
    return f"seq:{n:04d} {PAD}"


def seq_of(event: dict[str, Any]) -> int:
    match = re.match(r"seq:(\d{4}) ", event["data"]["text"])
    assert match, event["data"]["text"][:40]
    return int(match.group(1))


async def flood(sender: Client, sender_events: Collector, start: int, count: int,
                batch: int = 20) -> None:
    """Send ``count`` large messages to chat 1 in batches, waiting for each batch's acks."""
    acks = len(sender_events.of("ack"))
    for first in range(start, start + count, batch):
        last = min(first + batch, start + count)
        for n in range(first, last):
            await sender.send("send_message", {"chat_id": GENERAL, "text": seq_text(n)}, ref=n)
        await eventually(lambda last=last: len(sender_events.of("ack")) >= acks + last - start
                         or bool(sender_events.of("error")), 30.0, f"acks up to {last}")
        assert not sender_events.of("error"), sender_events.of("error")


def jane_connection(gateway: Gateway) -> Any:
    return next(c for c in gateway.registry.open if c.user_id == JANE)


async def test_slow_consumer_is_closed_and_fast_one_gets_everything(
        make_gateway: MakeGateway, raw_clients: Any, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(write_wait=1.0, **SLOW)
    async with client_factory(gateway.port) as connect:
        slow = await raw_clients(gateway.port, rcvbuf=4096)
        await slow.auth(tokens[JANE])  # and from now on reads nothing
        carol = Collector(await connect(tokens[CAROL]))
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        total = 300
        await flood(john, johns, 0, total)

        await eventually(lambda: len(carol.of("new_message")) >= total, 30.0,
                         "all messages at the fast receiver")
        assert [seq_of(e) for e in carol.of("new_message")] == list(range(total))
        assert [seq_of(e) for e in johns.of("new_message")] == list(range(total))
        carol.stop()
        johns.stop()

        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_slow_consumer_closes_total") >= 1
        events, code = await slow.drain_events(timeout=15.0)
        assert code in (1013, None), code
        got = [seq_of(e) for e in events if e["event"] == "new_message"]
        assert got == list(range(len(got))), "a closed consumer still gets an unbroken prefix"
        assert len(got) < total


async def slow_closes(gateway: Gateway, reason: str | None = None) -> float:
    text = await metrics_text(gateway)
    if reason is None:
        return metric_value(text, "gogate_slow_consumer_closes_total")
    return metric_value(text, "gogate_closes_total", reason=reason)


async def eventually_metric(gateway: Gateway, reason: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await slow_closes(gateway, reason) < 1:
        assert time.monotonic() < deadline, f"no slow-consumer close ({reason}) in {timeout}s"
        await asyncio.sleep(0.05)


async def test_queue_overflow_closes_1013(make_gateway: MakeGateway, raw_clients: Any,
                                          tokens: dict[int, str]) -> None:
    """WRITE_WAIT is long: only the send queue's overflow can close the slow consumer."""
    gateway = await make_gateway(write_wait=30.0, **SLOW)
    async with client_factory(gateway.port) as connect:
        slow = await raw_clients(gateway.port, rcvbuf=4096)
        await slow.auth(tokens[JANE])
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        started = time.monotonic()
        await flood(john, johns, 0, 120)
        johns.stop()
        await eventually_metric(gateway, "slow_consumer", 10.0)
        assert time.monotonic() - started < 10.0  # well before WRITE_WAIT
        assert await slow_closes(gateway, "write_timeout") == 0
        assert await slow_closes(gateway) >= 1
        events, code = await slow.drain_events(timeout=15.0)
        assert code in (1013, None), code
        got = [seq_of(e) for e in events if e["event"] == "new_message"]
        assert got == list(range(len(got)))
        assert len(got) < 120


async def test_blocked_write_closes_after_write_wait(make_gateway: MakeGateway,
                                                     raw_clients: Any,
                                                     tokens: dict[int, str]) -> None:
    """The queue is large: only WRITE_WAIT can close the stalled consumer."""
    gateway = await make_gateway(write_wait=1.0, send_queue_size=10_000,
                                 write_buffer_size=1024, rate_limit=0)
    async with client_factory(gateway.port) as connect:
        slow = await raw_clients(gateway.port, rcvbuf=4096)
        await slow.auth(tokens[JANE])
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        await flood(john, johns, 0, 100)
        flooded = time.monotonic()
        johns.stop()
        await eventually_metric(gateway, "write_timeout", 6.0)
        assert time.monotonic() - flooded < 6.0
        assert await slow_closes(gateway, "slow_consumer") == 0
        assert await slow_closes(gateway) >= 1
        _, code = await slow.drain_events(timeout=15.0)
        assert code in (1013, None), code


async def pause_jane(gateway: Gateway, john: Client, johns: Collector) -> int:
    """Send large messages to chat 1, one at a time, until Jane's socket stays unable to take
    data (the kernel's buffers may absorb a pause or two first). Returns how many were sent;
    those that did not fit wait in her send queue (``gogate_fast.stats()["queued"]``)."""
    sent = 0
    while True:
        sink = jane_connection(gateway).sink
        if sink.paused:
            await asyncio.sleep(0.2)
            if sink.paused:
                return sent
        assert sent < 300, "the slow consumer never paused"
        await john.send("send_message", {"chat_id": GENERAL, "text": seq_text(sent)}, ref=sent)
        sent += 1
        await eventually(lambda sent=sent: len(johns.of("ack")) >= sent, 10.0, "ack")


async def send_typing(john: Client, johns: Collector, count: int) -> None:
    """``count`` typing events to chat 1, each broadcast (the state alternates)."""
    acks = len(johns.of("ack"))
    for n in range(count):
        await john.send("typing", {"chat_id": GENERAL, "is_typing": n % 2 == 0}, ref=f"t{n}")
    await eventually(lambda: len(johns.of("ack")) >= acks + count, 10.0, "typing acks")


async def test_paused_consumer_with_only_typing_backlog_stays_open(
        make_gateway: MakeGateway, raw_clients: Any, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(write_wait=30.0, **SLOW)
    async with client_factory(gateway.port) as connect:
        slow = await raw_clients(gateway.port, rcvbuf=4096)
        await slow.auth(tokens[JANE])
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        sent = await pause_jane(gateway, john, johns)
        assert gogate_fast.stats()["queued"] <= 1  # only Jane's connection is paused
        typings = 200  # far more than the send queue holds
        await send_typing(john, johns, typings)
        johns.stop()
        await asyncio.sleep(0.3)
        assert await slow_closes(gateway) == 0

        # Jane reads again: every chat message, some typing, no close; then she is served.
        received: list[dict[str, Any]] = []
        while len([e for e in received if e["event"] == "new_message"]) < sent:
            received.append(await slow.recv(timeout=5.0))
        got = [seq_of(e) for e in received if e["event"] == "new_message"]
        assert got == list(range(sent))
        slow.send_event("typing", {"chat_id": GENERAL, "is_typing": True}, ref="back")
        while True:
            event = await slow.recv(timeout=5.0)
            if event["event"] == "ack":
                assert event["ref"] == "back"
                break
            assert event["event"] == "user_typing", event
            received.append(event)
        typing_seen = [e for e in received if e["event"] == "user_typing"]
        assert 0 < len(typing_seen) < typings  # some were shed, some arrived


async def test_messages_displace_typing_then_overflow(make_gateway: MakeGateway,
                                                      raw_clients: Any,
                                                      tokens: dict[int, str]) -> None:
    """A queue full of typing still takes SEND_QUEUE_SIZE chat messages (typing is shed for
    them); the message after that closes the connection 1013."""
    gateway = await make_gateway(write_wait=30.0, **SLOW)
    async with client_factory(gateway.port) as connect:
        slow = await raw_clients(gateway.port, rcvbuf=4096)
        await slow.auth(tokens[JANE])
        john = await connect(tokens[JOHN])
        johns = Collector(john)
        sent = await pause_jane(gateway, john, johns)
        queued = gogate_fast.stats()["queued"]  # Jane's: the only paused connection
        await send_typing(john, johns, 20)
        room = SLOW["send_queue_size"] - queued
        await flood(john, johns, sent, room, batch=1)
        await asyncio.sleep(0.2)
        assert await slow_closes(gateway) == 0, "typing was not shed for chat messages"
        await flood(john, johns, sent + room, 1, batch=1)
        await eventually_metric(gateway, "slow_consumer", 3.0)
        johns.stop()
        events, code = await slow.drain_events(timeout=15.0)
        assert code in (1013, None)
        got = [seq_of(e) for e in events if e["event"] == "new_message"]
        assert got == list(range(len(got)))


# --- graceful shutdown ----------------------------------------------------------------------


async def backend_stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(url + "/api/dev/stats") as r:
        calls: dict[str, int] = (await r.json())["calls"]
        return calls


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_and_closes_1001(gateway_process: StartProcess,
                                             sig: signal.Signals) -> None:
    backend_url = f"http://127.0.0.1:{free_port()}"
    proc = gateway_process(env={"BACKEND_API_URL": backend_url, "SHUTDOWN_TIMEOUT": "5",
                                "LOG_LEVEL": "info"}, args=["--dev"])
    tokens = await wait_for_tokens(proc)
    async with client_factory(proc.port) as connect:
        john = await connect(tokens[JOHN])
        jane = await connect(tokens[JANE])
        newcomer = await connect()  # not authenticated yet
        async with aiohttp.ClientSession() as session, session.put(
                backend_url + "/api/dev/faults",
                json={"delay": 1.0, "match": "/api/v1/messages"}) as response:
            assert response.status < 300, await response.text()
        await john.send("send_message", {"chat_id": GENERAL, "text": "last words"},
                        ref="inflight")
        deadline = time.monotonic() + 5
        while (await backend_stats(backend_url)).get("send_message", 0) < 1:
            assert time.monotonic() < deadline, "the message never reached the backend"
            await asyncio.sleep(0.02)

        proc.signal(sig)
        signalled = time.monotonic()
        johns: list[dict[str, Any]] = []

        async def read_until_closed(client: Client, into: list[dict[str, Any]]) -> int | None:
            try:
                while True:
                    into.append(await client.recv(timeout=10.0))
            except Exception:
                return client.ws.close_code

        janes: list[dict[str, Any]] = []
        john_code, jane_code = await asyncio.gather(read_until_closed(john, johns),
                                                    read_until_closed(jane, janes))
        assert [e["event"] for e in johns] == ["new_message", "ack"], johns
        assert johns[0]["data"]["text"] == "last words"
        assert johns[1]["ref"] == "inflight"
        assert [e["event"] for e in janes] == ["new_message"], janes
        assert (john_code, jane_code) == (1001, 1001)
        assert await newcomer.closed(timeout=2.0) == 1001
        exit_code = await asyncio.to_thread(proc.wait, 10)
        elapsed = time.monotonic() - signalled
        assert exit_code == 0, proc.output()
        assert elapsed < 5.0 + 1.5, elapsed


async def test_draining_gateway_accepts_no_new_connection(gateway_process: StartProcess
                                                          ) -> None:
    """While a slow backend call is finishing after SIGTERM, a new client is refused."""
    backend_url = f"http://127.0.0.1:{free_port()}"
    proc = gateway_process(env={"BACKEND_API_URL": backend_url, "SHUTDOWN_TIMEOUT": "5"},
                           args=["--dev"])
    tokens = await wait_for_tokens(proc)
    async with client_factory(proc.port) as connect:
        john = await connect(tokens[JOHN])
        async with aiohttp.ClientSession() as session, session.put(
                backend_url + "/api/dev/faults",
                json={"delay": 2.0, "match": "/api/v1/messages"}) as response:
            assert response.status < 300
        await john.send("send_message", {"chat_id": GENERAL, "text": "slow"}, ref=1)
        deadline = time.monotonic() + 5
        while (await backend_stats(backend_url)).get("send_message", 0) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert proc.proc.poll() is None, "the gateway did not wait for the call in flight"
        with pytest.raises((OSError, websockets.InvalidStatus)):
            await connect()
        assert await john.closed(timeout=6.0) == 1001
        assert await asyncio.to_thread(proc.wait, 10) == 0, proc.output()


async def check_bounded_drain(proc: Any, backend_url: str, tokens: dict[int, str]) -> None:
    """A backend call that outlasts SHUTDOWN_TIMEOUT (1.5 s here) does not hold the process:
    connections are closed 1001 and the process exits 0 within the timeout."""
    async with client_factory(proc.port) as connect:
        john = await connect(tokens[JOHN])
        async with aiohttp.ClientSession() as session, session.put(
                backend_url + "/api/dev/faults",
                json={"delay": 4.0, "match": "/api/v1/messages"}) as response:
            assert response.status < 300
        await john.send("send_message", {"chat_id": GENERAL, "text": "never"}, ref=1)
        deadline = time.monotonic() + 5
        while (await backend_stats(backend_url)).get("send_message", 0) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await john.closed(timeout=4.0) == 1001
        exit_code = await asyncio.to_thread(proc.wait, 10)
        elapsed = time.monotonic() - signalled
        assert exit_code == 0, proc.output()
        assert elapsed < 1.5 + 1.0, f"exited {elapsed:.1f}s after SIGTERM, SHUTDOWN_TIMEOUT=1.5"


async def test_drain_is_bounded_by_shutdown_timeout(gateway_process: StartProcess,
                                                    backend: DevBackend,
                                                    tokens: dict[int, str]) -> None:
    proc = gateway_process(env={"BACKEND_API_URL": str(backend.url),
                                "SHUTDOWN_TIMEOUT": "1.5"})
    await check_bounded_drain(proc, str(backend.url), tokens)


async def test_drain_is_bounded_by_shutdown_timeout_in_dev_mode(
        gateway_process: StartProcess) -> None:
    backend_url = f"http://127.0.0.1:{free_port()}"
    proc = gateway_process(env={"BACKEND_API_URL": backend_url, "SHUTDOWN_TIMEOUT": "1.5"},
                           args=["--dev"])
    await check_bounded_drain(proc, backend_url, await wait_for_tokens(proc))
