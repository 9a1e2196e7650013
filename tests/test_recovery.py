"""Recovery on a lone worker, as clients see it over real sockets: every stream event carries
its user's offset, the same on every device; a client that comes back with ``since`` gets what
it missed, oldest first with the original offsets, then live events, with no event twice and
none skipped even while new events race the replay; and it is told ``recovered: false`` when
that cannot be done (another epoch, past the kept window, an offset from the future, recovery
off).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import (
    GENERAL,
    JANE,
    JOHN,
    KEY,
    Client,
    client_factory,
    gateway_settings,
    metric_value,
    metrics_text,
)

import gogate_fast
from gogate.devbackend import DevBackend
from gogate.hub import LocalBroker
from gogate.server import Gateway

Frame = dict[str, Any]
StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start(backend: DevBackend) -> AsyncIterator[StartGateway]:
    """Start a lone gateway in this process with its settings' recovery (on by default)."""
    started: list[Gateway] = []

    async def make(**overrides: Any) -> Gateway:
        overrides.setdefault("rate_limit", 0)
        assert backend.url is not None
        settings = gateway_settings(backend.url, **overrides)
        gateway = Gateway(settings, LocalBroker(settings.recovery_ttl, settings.recovery_size))
        await gateway.start()
        started.append(gateway)
        return gateway

    before = gogate_fast.stats()
    yield make
    for gateway in started:
        await gateway.stop()
    if started:
        await asyncio.sleep(0.05)
        assert gogate_fast.stats() == before, "sinks or send rings outlived their connections"


async def auth(client: Client, token: str, since: Frame | None = None) -> Frame:
    data: Frame = {"token": token}
    if since is not None:
        data["since"] = since
    await client.send("auth", data)
    answer: Frame = (await client.expect("auth_success"))["data"]
    return answer


async def send_messages(client: Client, texts: list[str], others: list[Frame] | None = None
                        ) -> list[int]:
    """Send every text, 100 at a time without waiting in between (a connection's inbox holds
    256), and return the message ids, in order, from the acks; the other frames read
    meanwhile go to ``others``."""
    ids: dict[int, int] = {}
    for batch in range(0, len(texts), 100):
        for ref in range(batch, min(batch + 100, len(texts))):
            await client.send("send_message", {"chat_id": GENERAL, "text": texts[ref]},
                              ref=ref)
        while len(ids) < min(batch + 100, len(texts)):
            frame = await client.recv(10.0)
            if frame["event"] == "ack":
                ids[frame["ref"]] = frame["data"]["message_id"]
            elif others is not None:
                others.append(frame)
    return [ids[ref] for ref in range(len(texts))]


async def stream_events(client: Client, count: int, timeout: float = 10.0) -> list[Frame]:
    """The next ``count`` frames that carry an offset (others are skipped)."""
    got: list[Frame] = []
    while len(got) < count:
        frame = await client.recv(timeout)
        if "offset" in frame:
            got.append(frame)
    return got


async def publish(gateway: Gateway, body: Frame) -> None:
    assert gateway.internal is not None
    url = f"http://127.0.0.1:{gateway.internal.port}/api/internal/v1/publish"
    async with aiohttp.ClientSession() as session, session.post(
            url, json=body, headers={"X-Internal-API-Key": KEY}) as response:
        assert response.status == 202, await response.text()


def offsets(frames: list[Frame]) -> list[int]:
    return [frame["offset"] for frame in frames]


# --- offsets ---------------------------------------------------------------------------------


async def test_offsets_are_consecutive_and_equal_on_every_device(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        john, phone, laptop = await connect(), await connect(), await connect()
        first = await auth(john, tokens[JOHN])
        on_phone = await auth(phone, tokens[JANE])
        on_laptop = await auth(laptop, tokens[JANE])
        assert first["stream"]["offset"] == 0 and "recovered" not in first
        assert on_phone["stream"] == on_laptop["stream"]  # one stream per user, not per device
        assert on_phone["stream"]["epoch"] != first["stream"]["epoch"]
        mine: list[Frame] = []
        ids = await send_messages(john, [f"m{i}" for i in range(20)], mine)
        await john.send("add_reaction", {"message_id": ids[0], "emoji": "👍",
                                         "chat_id": GENERAL})
        await phone.send("mark_read", {"message_ids": ids[:2], "chat_id": GENERAL})
        await laptop.send("typing", {"chat_id": GENERAL, "is_typing": True})
        seen = [await stream_events(device, 22) for device in (phone, laptop)]
        assert seen[0] == seen[1]
        assert offsets(seen[0]) == list(range(1, 23))
        assert [f["data"]["id"] for f in seen[0][:20]] == ids
        assert [f["event"] for f in seen[0][20:]] == ["new_reaction", "message_read"]
        typing: list[Frame] = []
        while len(mine) < 22 or not typing:  # the sender's own stream has the same events
            frame = await john.recv()
            (typing if frame["event"] == "user_typing" else mine).append(frame)
        assert "offset" not in typing[0]  # typing is not a stream event
        assert offsets(mine) == list(range(1, 23))


async def test_internal_api_publishes_carry_offsets_and_replay(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        jane = await connect()
        stream = (await auth(jane, tokens[JANE]))["stream"]
        await publish(gateway, {"event": "notice", "data": {"n": 1}, "user_ids": [JANE]})
        await publish(gateway, {"event": "chat_updated", "data": {"n": 2}, "chat_id": GENERAL})
        live = await stream_events(jane, 2)
        assert [(f["event"], f["offset"]) for f in live] == [("notice", 1), ("chat_updated", 2)]
        await jane.close()
        await publish(gateway, {"event": "notice", "data": {"n": 3}, "user_ids": [JANE]})
        again = await connect()
        answer = await auth(again, tokens[JANE], {"epoch": stream["epoch"], "offset": 1})
        assert answer["recovered"] is True and answer["stream"]["offset"] == 3
        replayed = await stream_events(again, 2)
        assert replayed == [
            {"event": "chat_updated", "data": {"n": 2}, "offset": 2},
            {"event": "notice", "data": {"n": 3}, "offset": 3}]
        await again.silent(0.2)


# --- resume ----------------------------------------------------------------------------------


async def test_a_resume_replays_what_was_missed_then_goes_live(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        stream = (await auth(jane, tokens[JANE]))["stream"]
        before = await send_messages(john, ["a", "b", "c"])
        assert offsets(await stream_events(jane, 3)) == [1, 2, 3]
        await jane.close()
        missed = await send_messages(john, [f"missed {i}" for i in range(10)])
        jane = await connect()
        answer = await auth(jane, tokens[JANE], {"epoch": stream["epoch"], "offset": 2})
        assert answer["recovered"] is True
        assert answer["stream"] == {"epoch": stream["epoch"], "offset": 13}
        replayed = await stream_events(jane, 11)
        assert offsets(replayed) == list(range(3, 14))
        assert [f["data"]["id"] for f in replayed] == before[2:] + missed
        live = await send_messages(john, ["live"])
        (frame,) = await stream_events(jane, 1)
        assert (frame["offset"], frame["data"]["id"]) == (14, live[0])
        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_stream_resumes_total", outcome="recovered") == 1
        assert metric_value(text, "gogate_stream_replayed_events_total") == 11


async def test_live_events_racing_the_replay_arrive_once_and_in_order(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        stream = (await auth(jane, tokens[JANE]))["stream"]
        await jane.close()
        missed = [f"missed {i}" for i in range(300)]
        first = await send_messages(john, missed)
        racing = asyncio.create_task(send_messages(john, [f"race {i}" for i in range(200)]))
        await asyncio.sleep(0.01)  # the race is under way when the resume comes
        jane = await connect()
        answer = await auth(jane, tokens[JANE], {"epoch": stream["epoch"], "offset": 0})
        assert answer["recovered"] is True and answer["stream"]["offset"] >= 300
        got = await stream_events(jane, 500)
        second = await racing
        assert offsets(got) == list(range(1, 501))
        assert [f["data"]["id"] for f in got] == first + second
        await jane.silent(0.3)


async def test_another_epoch_is_not_recovered(start: StartGateway,
                                              tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        answer = await auth(jane, tokens[JANE], {"epoch": "from-another-life", "offset": 1})
        assert answer["recovered"] is False and answer["stream"]["offset"] == 0
        await jane.silent(0.2)  # nothing replayed
        await send_messages(john, ["x"])
        assert offsets(await stream_events(jane, 1)) == [1]


async def test_past_the_kept_window_is_not_recovered(start: StartGateway,
                                                     tokens: dict[int, str]) -> None:
    gateway = await start(recovery_size=5)
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        epoch = (await auth(jane, tokens[JANE]))["stream"]["epoch"]
        await jane.close()
        await send_messages(john, [f"m{i}" for i in range(8)])
        late = await connect()
        answer = await auth(late, tokens[JANE], {"epoch": epoch, "offset": 2})  # 3..8: 6 > 5
        assert answer["recovered"] is False and answer["stream"]["offset"] == 8
        await late.silent(0.2)
        just = await connect()
        answer = await auth(just, tokens[JANE], {"epoch": epoch, "offset": 3})  # 4..8: kept
        assert answer["recovered"] is True
        assert offsets(await stream_events(just, 5)) == [4, 5, 6, 7, 8]


async def test_an_offset_above_the_latest_is_not_recovered(start: StartGateway,
                                                           tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        epoch = (await auth(jane, tokens[JANE]))["stream"]["epoch"]
        await send_messages(john, ["one"])
        assert offsets(await stream_events(jane, 1)) == [1]
        ahead = await connect()
        answer = await auth(ahead, tokens[JANE], {"epoch": epoch, "offset": 2})
        assert answer["recovered"] is False and answer["stream"] == {"epoch": epoch, "offset": 1}
        await ahead.silent(0.2)


async def test_recovery_off_numbers_nothing(start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start(recovery_ttl=0)
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        answer = await auth(jane, tokens[JANE], {"epoch": "e", "offset": 0})
        assert answer["recovered"] is False and "stream" not in answer
        plain = await auth(await connect(), tokens[JANE])
        assert "stream" not in plain and "recovered" not in plain
        await send_messages(john, ["x"])
        frame = await jane.expect("new_message")
        assert "offset" not in frame


@pytest.mark.parametrize("since", [
    "yesterday", 5, {"epoch": "e"}, {"offset": 1}, {"epoch": 1, "offset": 1},
    {"epoch": "e", "offset": -1}, {"epoch": "e", "offset": "1"}, {"epoch": "e", "offset": 1.5},
])
async def test_a_malformed_since_is_invalid_and_not_a_failed_attempt(
        start: StartGateway, tokens: dict[int, str], since: Any) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        jane = await connect()
        for _ in range(4):  # more than the failed attempts that close a connection
            await jane.send("auth", {"token": tokens[JANE], "since": since})
            await jane.expect_error("INVALID_PAYLOAD")
        answer = await auth(jane, tokens[JANE])
        assert answer["user_id"] == JANE


async def test_an_authenticated_connection_ignores_since(start: StartGateway,
                                                         tokens: dict[int, str]) -> None:
    gateway = await start()
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect()
        epoch = (await auth(jane, tokens[JANE]))["stream"]["epoch"]
        await send_messages(john, ["a", "b"])
        await stream_events(jane, 2)
        again = await auth(jane, tokens[JANE], {"epoch": epoch, "offset": 0})
        assert again["stream"] == {"epoch": epoch, "offset": 2} and "recovered" not in again
        await jane.silent(0.2)  # nothing replayed


# --- pacing ----------------------------------------------------------------------------------


async def test_a_replay_is_paced_by_the_socket_and_never_overflows_the_send_queue(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start(send_queue_size=2, write_buffer_size=4096)
    async with client_factory(gateway.port) as connect:
        jane = await connect()
        epoch = (await auth(jane, tokens[JANE]))["stream"]["epoch"]
        await jane.close()
        text = "x" * 16_000
        for n in range(400):  # 6.4 MB the client will not read at first
            await publish(gateway, {"event": "notice", "data": {"n": n, "text": text},
                                    "user_ids": [JANE]})
        late = await connect(max_queue=1)
        await late.send("auth", {"token": tokens[JANE],
                                 "since": {"epoch": epoch, "offset": 0}})
        deadline = time.monotonic() + 5
        while not any(c.user_id == JANE and c.sink.paused for c in gateway.registry.open):
            assert time.monotonic() < deadline, "the replay never filled the socket"
            await asyncio.sleep(0.01)  # the socket is full: the replay waits for it
        (conn,) = [c for c in gateway.registry.open if c.user_id == JANE]
        assert conn.sink.catching_up
        for n in range(400, 410):  # live events meanwhile: kept, not queued
            await publish(gateway, {"event": "notice", "data": {"n": n}, "user_ids": [JANE]})
        assert (await late.expect("auth_success"))["data"]["recovered"] is True
        got = await stream_events(late, 410)
        assert offsets(got) == list(range(1, 411))
        assert [f["data"]["n"] for f in got] == list(range(410))
        await late.silent(0.2)  # still open: no slow-consumer close
        assert metric_value(await metrics_text(gateway), "gogate_slow_consumer_closes_total") == 0


# --- chaos -----------------------------------------------------------------------------------


async def test_a_client_dropping_and_resuming_100_times_gets_every_message_once_in_order(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start()
    rng = random.Random(9)
    count = 1000
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        first = await connect()
        position = (await auth(first, tokens[JANE]))["stream"]
        await first.close()
        processed: list[Frame] = []
        sender = asyncio.create_task(send_messages(john, [f"burst {i}" for i in range(count)]))
        drops = midway = 0  # resumes, and those that came with messages still to receive
        while drops < 100 or len(processed) < count:
            client = await connect()
            answer = await auth(client, tokens[JANE], position)
            midway += len(processed) < count
            assert answer["recovered"] is True, (drops, position, answer)
            budget = rng.randint(0, 18) if drops < 100 else count
            try:
                while budget > 0 and len(processed) < count:
                    frame = await client.recv(10.0)
                    if "offset" not in frame:
                        continue
                    processed.append(frame)
                    position = {"epoch": position["epoch"], "offset": frame["offset"]}
                    budget -= 1
            finally:
                if drops < 100:
                    client.ws.transport.abort()  # gone without a close handshake
                    drops += 1
                    with_close = client.ws.wait_closed()
                    await asyncio.wait_for(with_close, 5)
        ids = await sender
        assert midway >= 90
        assert offsets(processed) == list(range(1, count + 1))
        assert [f["data"]["id"] for f in processed] == ids


async def test_the_stream_outlives_the_connection_for_recovery_ttl_only(
        start: StartGateway, tokens: dict[int, str]) -> None:
    gateway = await start(recovery_ttl=0.5)
    async with client_factory(gateway.port) as connect:
        jane = await connect()
        epoch = (await auth(jane, tokens[JANE]))["stream"]["epoch"]
        await jane.close()
        await asyncio.sleep(2.0)  # the stream expired; a new one has a new epoch
        back = await connect()
        answer = await auth(back, tokens[JANE], {"epoch": epoch, "offset": 0})
        assert answer["recovered"] is False and answer["stream"]["epoch"] != epoch
        assert answer["stream"]["offset"] == 0


async def test_websockets_client_sees_whole_frames(start: StartGateway,
                                                   tokens: dict[int, str]) -> None:
    """The spliced frames are valid WebSocket frames for an independent client."""
    gateway = await start()
    async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
        await ws.send(json.dumps({"event": "auth", "data": {"token": tokens[JANE]}}))
        await ws.recv()
        await publish(gateway, {"event": "notice", "data": {"x": "y" * 200},
                                "user_ids": [JANE]})
        raw = await ws.recv()
        assert isinstance(raw, str) and raw.endswith(',"offset":1}')
