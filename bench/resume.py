"""The ``resume`` scenario of the load generator: a crowd that loses its connections while its
chats go on, and comes back with ``since``.

``--resume-chats`` chats of ``--resume-members`` members each (every member in one chat), all
connected and authenticated; each client remembers where its stream stands (the epoch and
offset of ``auth_success.data.stream``, then the offset of every event it processes). All of
them drop at once (no close handshake); once the gateway has let them go, one more member per
chat, connected throughout, sends ``--resume-messages`` messages to it (a few in flight per
sender, each acknowledged), so every dropped member misses that many events. Then all reconnect
at once (``--storm-concurrency`` handshakes in flight, a failed attempt retried after 0.5 to
1.5 s) and authenticate with ``since``.

Reported: the time from the first reconnect until every client has caught up, that is received
every offset after its ``since`` up to where its stream stood when it was answered (checked
offset by offset: a gap or a repeat counts as an order error); resumes answered
``recovered: true`` and ``false``; events replayed, counted by the clients and by the gateway
(``gogate_stream_replayed_events_total``); per-client catch-up time (connect start to its
last missed event); gateway CPU; and the backend calls made while the messages were sent and
during the resume (``/api/dev/stats``): one ``send_message`` per message, and no call at all for
a replay (with the validation cache or a local JWT, no ``validate`` either).

Variants: ``backend`` (default settings: the validation cache is on), ``jwt`` (local
verification). The gateway keeps its default ``RECOVERY_TTL`` and ``RECOVERY_SIZE``. Only gogate
runs it: a gateway without resumable streams (the original Go gateway) has nothing to measure
here, so ``--baseline`` gateways are skipped for this scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any, cast

import aiohttp
import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import (
    AUTH_OK,
    Client,
    Meter,
    Row,
    System,
    close_clients,
    open_clients,
    percentile,
)
from bench.storms import Variant

__all__ = ["RESUME_VARIANTS", "resume"]

RESUME_VARIANTS = {
    "backend": Variant("default settings (validation cache on)", {}),
    "jwt": Variant("local JWT (RS256)", {"JWT_PUBLIC_KEY": "{public_key}"}),
}

_OFFSET = b',"offset":'
_WINDOW = 4  # messages in flight per sender


class _Position(msgspec.Struct):
    epoch: str
    offset: int


class _Greeting(msgspec.Struct):
    stream: _Position | None = None
    recovered: bool | None = None


class _AuthSuccess(msgspec.Struct):
    data: _Greeting


_greeting = msgspec.json.Decoder(_AuthSuccess)


class Resumer(WSListener):
    """A client that keeps its stream position: the epoch, the last offset it processed, and
    the offset it must reach to have caught up. Every stream event must carry the next offset;
    anything else is counted in ``disorder``."""

    __slots__ = ("caught_up", "disorder", "epoch", "events", "last", "recovered", "target",
                 "transport", "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.epoch = ""
        self.last = 0
        self.target = 0  # the stream's offset when this connection was answered
        self.recovered: bool | None = None  # auth_success.data.recovered
        self.events = 0  # stream events received on this connection
        self.disorder = 0  # offsets that were not the next one (a gap or a repeat)
        self.caught_up: asyncio.Future[float] | None = None  # resolved at the target

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(payload)
            return
        at = payload.rfind(_OFFSET)
        if at < 0:
            return
        offset = int(payload[at + len(_OFFSET):-1])
        self.events += 1
        if offset != self.last + 1:
            self.disorder += 1
        self.last = max(self.last, offset)
        self.check()

    def check(self) -> None:
        """Resolve ``caught_up`` (with the time) once the target offset is reached."""
        if self.caught_up is not None and self.last >= self.target \
                and not self.caught_up.done():
            self.caught_up.set_result(time.perf_counter())

    def disconnect(self) -> None:
        if self.transport is not None:
            self.transport.disconnect()


async def _authenticate(url: str, token: str, since: tuple[str, int] | None) -> Resumer:
    """Connect and authenticate (with ``since`` when given); the client's position and target
    are set from ``auth_success``."""
    _, listener = await ws_connect(Resumer, url)
    client = cast(Resumer, listener)
    answer = client.waiter = asyncio.get_running_loop().create_future()
    auth: dict[str, Any] = {"token": token}
    if since is not None:
        auth["since"] = {"epoch": since[0], "offset": since[1]}
        client.epoch, client.last = since
    assert client.transport is not None
    client.transport.send(WSMsgType.TEXT, msgspec.json.encode({"event": "auth", "data": auth}))
    try:
        reply = await asyncio.wait_for(answer, 30)
    except BaseException:
        client.disconnect()
        raise
    if not reply.startswith(AUTH_OK):
        client.disconnect()
        raise RuntimeError(f"auth refused: {reply[:200]!r}")
    greeting = _greeting.decode(reply).data
    if greeting.stream is None:
        client.disconnect()
        raise RuntimeError("auth_success carries no stream: is recovery off (RECOVERY_TTL=0)?")
    if since is None or not greeting.recovered:
        client.epoch, client.last = greeting.stream.epoch, greeting.stream.offset
    client.target = greeting.stream.offset
    client.recovered = greeting.recovered
    return client


class Outcome:
    """What the resuming clients saw."""

    def __init__(self, count: int) -> None:
        self.clients: list[Resumer | None] = [None] * count
        self.recovered = 0
        self.not_recovered = 0
        self.retries = 0
        self.catch_up: list[float] = []  # seconds, connect start to the last missed event


async def _resume_all(port: int, tokens: list[str], positions: list[tuple[str, int]],
                      concurrency: int, timeout: float) -> Outcome:
    """Reconnect every client with ``since`` its position and wait until each has caught up
    (or ``timeout`` has passed)."""
    url = f"ws://127.0.0.1:{port}/ws"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    semaphore = asyncio.Semaphore(concurrency)
    outcome = Outcome(len(tokens))

    async def one(index: int) -> None:
        while True:
            async with semaphore:
                started = time.perf_counter()
                try:
                    client = await _authenticate(url, tokens[index], positions[index])
                    break
                except Exception:  # refused upgrade (503), reset: try again
                    outcome.retries += 1
            if loop.time() > deadline:
                return
            await asyncio.sleep(random.uniform(0.5, 1.5))
        outcome.clients[index] = client
        if not client.recovered:  # its position is gone: nothing to catch up with
            outcome.not_recovered += 1
            return
        outcome.recovered += 1
        client.caught_up = loop.create_future()
        client.check()
        try:
            finished = await asyncio.wait_for(client.caught_up, max(0.1, deadline - loop.time()))
        except TimeoutError:
            return
        outcome.catch_up.append(finished - started)

    await asyncio.gather(*(one(i) for i in range(len(tokens))))
    return outcome


async def _metrics(system: System) -> dict[str, float]:
    """The gateway's counters and gauges, by sample name and labels."""
    port = getattr(system.server, "internal_port", None)
    if port is None:
        return {}
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())):
            sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def _wait_connections(system: System, count: int, timeout: float = 15.0) -> None:
    """Wait until the gateway reports ``count`` open connections (the dropped ones let go)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await _metrics(system)).get("gogate_connections") == count:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the gateway did not let the dropped connections go in {timeout:g} s")


async def _send_all(senders: list[Client], chat_ids: list[int], messages: int,
                    timeout: float) -> None:
    """Each sender sends ``messages`` messages to its chat, ``_WINDOW`` in flight; returns once
    every one is acknowledged."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    total = len(senders) * messages
    acked = 0

    def pump(client: Client, chat_id: int) -> None:
        sent = 0

        def send() -> None:
            nonlocal sent
            sent += 1
            client.send(b'{"event":"send_message","data":{"chat_id":%d,"text":"missed %d"},'
                        b'"ref":%d}' % (chat_id, sent, sent))

        def on_ack() -> None:
            nonlocal acked
            acked += 1
            if sent < messages:
                send()
            if acked == total and not done.done():
                done.set_result(None)

        client.on_ack = on_ack
        for _ in range(min(_WINDOW, messages)):
            send()

    for client, chat_id in zip(senders, chat_ids, strict=True):
        pump(client, chat_id)
    if total:
        await asyncio.wait_for(done, timeout)


async def _connect_crowd(port: int, tokens: list[str], concurrency: int) -> list[Resumer]:
    """Connect and authenticate every token (no ``since``): each client starts where its
    stream stands."""
    url = f"ws://127.0.0.1:{port}/ws"
    semaphore = asyncio.Semaphore(concurrency)

    async def one(token: str) -> Resumer:
        async with semaphore:
            return await _authenticate(url, token, None)

    return list(await asyncio.gather(*(one(t) for t in tokens)))


def _counter(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def resume(system: System, args: argparse.Namespace, variant: str) -> Row:
    row = Row(system.name)
    backend = system.backend
    port = system.server.port
    chats, members, messages = args.resume_chats, args.resume_members, args.resume_messages
    users = await backend.users(chats * (members + 1))
    crowd_users, sender_users = users[:chats * members], users[chats * members:]
    chat_ids = [await backend.chat([*(uid for uid, _ in crowd_users[c * members:
                                                                     (c + 1) * members]),
                                    sender_users[c][0]])
                for c in range(chats)]
    tokens = [t for _, t in crowd_users]
    senders, _ = await open_clients(port, [t for _, t in sender_users], args.concurrency)
    crowd = await _connect_crowd(port, tokens, args.concurrency)
    positions = [(c.epoch, c.last) for c in crowd]
    await asyncio.sleep(args.warmup)

    # The drop, and the messages the crowd misses.
    await backend.reset_calls()
    for client in crowd:
        client.disconnect()
    await _wait_connections(system, len(senders))
    await _send_all(senders, chat_ids, messages, args.storm_timeout)
    sends = await backend.calls()

    # The resume.
    await backend.reset_calls()
    metrics_before = await _metrics(system)
    meter = Meter(system.server)
    meter.start()
    outcome = await _resume_all(port, tokens, positions, args.storm_concurrency,
                                args.storm_timeout)
    meter.stop()
    calls = await backend.calls()
    metrics_after = await _metrics(system)

    back = [c for c in outcome.clients if c is not None]
    caught = len(outcome.catch_up)
    missed = [c.target - p[1] for c, p in zip(outcome.clients, positions, strict=True)
              if c is not None and c.recovered]
    row.values["clients"] = len(tokens)
    row.values["missed/client"] = sum(missed) / max(1, len(missed))
    row.values["all caught up s"] = meter.wall if caught == len(tokens) else float("nan")
    row.values["caught up"] = caught
    row.values["catch-up p50 ms"] = percentile(outcome.catch_up, 0.5) * 1000
    row.values["catch-up p99 ms"] = percentile(outcome.catch_up, 0.99) * 1000
    row.values["recovered true"] = outcome.recovered
    row.values["recovered false"] = outcome.not_recovered
    row.values["retries"] = outcome.retries
    row.values["replayed (clients)"] = sum(c.events for c in back)
    row.values["replayed (/metrics)"] = _counter(
        metrics_before, metrics_after, "gogate_stream_replayed_events_total")
    row.values["order errors"] = sum(c.disorder for c in back)
    row.values["send_message calls"] = sends.get("send_message", 0)
    row.values["other calls sending"] = sum(sends.values()) - sends.get("send_message", 0)
    row.values["validate calls resuming"] = calls.get("validate", 0)
    row.values["other calls resuming"] = sum(calls.values()) - calls.get("validate", 0)
    row.values["gw µs/resume"] = meter.server_cpu / max(1, len(back)) * 1e6
    row.values["gw CPU %"] = meter.server_cpu / meter.wall * 100
    row.values["loadgen CPU %"] = meter.own_cpu / meter.wall * 100
    for client in back:
        client.disconnect()
    close_clients(senders)
    await asyncio.sleep(0.5)
    return row
