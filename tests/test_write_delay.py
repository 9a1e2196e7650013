"""``WRITE_DELAY``: a connection collects frames for that many milliseconds before one write.
Every event still arrives, once, in order, one JSON object per WebSocket frame."""

from __future__ import annotations

import asyncio
import json
import time

from conftest import CAROL, GENERAL, JANE, JOHN, MakeGateway, client_factory
from rawws import RawClient

COUNT = 60


async def test_with_a_write_delay_events_arrive_whole_and_in_order(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(write_delay=5, rate_limit=0)
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        jane, carol = await connect(tokens[JANE]), await connect(tokens[CAROL])
        sent = [f"delayed {i:03d}" for i in range(COUNT)]
        for ref, text in enumerate(sent):  # no waiting for acks in between
            await john.send("send_message", {"chat_id": GENERAL, "text": text}, ref=ref)
        # ``recv`` decodes each WebSocket message as one JSON object: two events glued into
        # one frame, or one event cut across frames, fail it.
        mine = [await john.recv() for _ in range(2 * COUNT)]
        assert [f["ref"] for f in mine if f["event"] == "ack"] == list(range(COUNT))
        for client in (jane, carol):
            frames = [await client.recv() for _ in range(COUNT)]
            assert [f["event"] for f in frames] == ["new_message"] * COUNT
            assert [f["data"]["text"] for f in frames] == sent
            await client.silent(0.2)


async def test_frames_wait_for_the_write_delay(make_gateway: MakeGateway,
                                               tokens: dict[int, str]) -> None:
    """With a delay long enough to see, what the gateway writes leaves no sooner; events
    collected meanwhile are still one frame each, of one JSON object."""
    gateway = await make_gateway(write_delay=150, rate_limit=0)
    client = await RawClient.open(gateway.port)
    try:
        started = time.monotonic()
        client.send_event("auth", {"token": tokens[JOHN]})
        assert (await client.recv())["event"] == "auth_success"
        assert time.monotonic() - started >= 0.14
        for ref in range(3):  # three messages sent within one delay
            client.send_event("send_message", {"chat_id": GENERAL, "text": f"m{ref}"}, ref)
        frames = []
        for _ in range(6):
            fin, opcode, payload = await client.read_frame()
            assert fin and opcode == 1
            frames.append(json.loads(payload))
        assert sorted(f["ref"] for f in frames if f["event"] == "ack") == [0, 1, 2]
    finally:
        client.writer.close()
        await asyncio.sleep(0)
