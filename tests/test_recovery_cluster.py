"""Resumable streams across workers and hosts: every device of a user sees the same offsets
whichever worker or host it is on, a resume works on any of them, Redis losing its data is
answered ``recovered: false``, and a Redis outage ends with every event delivered exactly once
and a ``stream_reset`` for the users whose events went unnumbered.

Real ``python -m gogate`` processes against the development backend, as tests/test_workers.py
runs them; the hosts share a real ``redis-server``, as in tests/test_redis.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

from conftest import CAROL, GENERAL, JANE, JOHN, Client, StartProcess, client_factory
from test_redis import ROUTING, RedisServer, drain, redis_server, start_hosts, until_silent
from test_workers import on_worker, publish, receive, start

from gogate.cluster import bus
from gogate.cluster.outbox import Outbox
from gogate.devbackend import DevBackend

__all__ = ["redis_server"]  # the fixture, shared with tests/test_redis.py


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["text"] for f in frames if f["event"] == "new_message"]


def numbered(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(offset, text) of every new_message."""
    return [(f["offset"], f["data"]["text"]) for f in frames if f["event"] == "new_message"]


async def resume(client: Client, token: str, since: dict[str, Any]) -> dict[str, Any]:
    await client.send("auth", {"token": token, "since": since})
    data: dict[str, Any] = (await client.expect("auth_success"))["data"]
    return data


async def send_all(sender: Client, texts_: list[str]) -> None:
    for text in texts_:
        await sender.send("send_message", {"chat_id": GENERAL, "text": text})


async def own_copies(sender: Client, sent: list[str]) -> None:
    """Read the sender's frames until its own copies of ``sent`` have all arrived (so the
    gateway has numbered them)."""
    waiting = set(sent)
    while waiting:
        frame = await sender.recv(10.0)
        if frame["event"] == "new_message":
            waiting.discard(frame["data"]["text"])


# --- several workers: the supervisor numbers every stream event ------------------------------


async def test_two_devices_on_two_workers_see_the_same_offsets(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 2)
    async with client_factory(proc.port) as connect:
        john_0, john_1 = await on_worker(connect, 0), await on_worker(connect, 1)
        hello_0, hello_1 = await john_0.auth(tokens[JOHN]), await john_1.auth(tokens[JOHN])
        assert hello_0["stream"] == hello_1["stream"], "one stream per user on the host"
        start_at = hello_0["stream"]["offset"]
        jane = await on_worker(connect, 1, tokens[JANE])
        carol = await on_worker(connect, 0, tokens[CAROL])

        sent = [f"from two workers {i:02d}" for i in range(20)]
        await asyncio.gather(send_all(jane, sent[0::2]), send_all(carol, sent[1::2]))
        frames_0, frames_1 = await receive(john_0, 20), await receive(john_1, 20)
        assert numbered(frames_0) == numbered(frames_1), "the devices disagree"
        assert [offset for offset, _ in numbered(frames_0)] == list(
            range(start_at + 1, start_at + 21)), frames_0
        assert sorted(texts(frames_0)) == sorted(sent)
        for own in (sent[0::2], sent[1::2]):
            assert [t for t in texts(frames_0) if t in own] == own, "per-sender order"

        await publish(proc, {"event": "notice", "data": {"n": 1}, "user_ids": [JOHN]})
        notices = [await john_0.expect("notice"), await john_1.expect("notice")]
        assert [n["offset"] for n in notices] == [start_at + 21] * 2

        await until_silent(jane, 0.3)
        await john_0.send("send_message", {"chat_id": GENERAL, "text": "mine"}, ref=7)
        mine = [await john_0.recv(), await john_0.recv()]
        assert [f["event"] for f in mine] == ["new_message", "ack"], "the ack came first"
        assert mine[0]["offset"] == (await john_1.expect("new_message"))["offset"]

        await jane.send("typing", {"chat_id": GENERAL, "is_typing": True})
        for john in (john_0, john_1):
            typing = await john.expect("user_typing")
            assert "offset" not in typing, "typing is not kept"
        await asyncio.gather(john_0.silent(0.5), john_1.silent(0.5))


async def test_resume_on_the_other_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 2)
    async with client_factory(proc.port) as connect:
        john = await on_worker(connect, 0)
        epoch = (await john.auth(tokens[JOHN]))["stream"]["epoch"]
        jane = await on_worker(connect, 1, tokens[JANE])
        await send_all(jane, ["seen 1", "seen 2"])
        seen = numbered(await receive(john, 2))
        last = seen[-1][0]
        await john.close()

        missed = [f"missed {i}" for i in range(5)]
        await send_all(jane, missed)
        await own_copies(jane, missed)

        again = await on_worker(connect, 1)  # the other worker
        hello = await resume(again, tokens[JOHN], {"epoch": epoch, "offset": last})
        assert hello["recovered"] is True, hello
        assert hello["stream"] == {"epoch": epoch, "offset": last + len(missed)}
        replayed = numbered(await receive(again, len(missed)))
        assert replayed == [(last + 1 + i, text) for i, text in enumerate(missed)]

        await send_all(jane, ["live"])
        assert numbered([await again.expect("new_message")]) == [(last + 6, "live")]
        await again.silent(0.5)

        # a foreign epoch and an offset past the latest are not served, on either worker
        for worker, since in ((0, {"epoch": "not-this-one", "offset": 1}),
                              (1, {"epoch": epoch, "offset": last + 50})):
            stale = await on_worker(connect, worker)
            hello = await resume(stale, tokens[JOHN], since)
            assert hello["recovered"] is False, (worker, hello)
            assert hello["stream"] == {"epoch": epoch, "offset": last + 6}
            await stale.silent(0.3)


# --- several hosts: the streams live in Redis ------------------------------------------------


async def test_resume_on_the_other_host(gateway_process: StartProcess, backend: DevBackend,
                                        redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john_a, john_b = await on_a(), await on_b()
        hello_a, hello_b = await john_a.auth(tokens[JOHN]), await john_b.auth(tokens[JOHN])
        assert hello_a["stream"] == hello_b["stream"], "one stream per user in the deployment"
        epoch, start_at = hello_a["stream"]["epoch"], hello_a["stream"]["offset"]
        jane_b, carol_a = await on_b(tokens[JANE]), await on_a(tokens[CAROL])

        sent = [f"across hosts {i:02d}" for i in range(10)]
        await asyncio.gather(send_all(jane_b, sent[0::2]), send_all(carol_a, sent[1::2]))
        on_john_a, on_john_b = await receive(john_a, 10), await receive(john_b, 10)
        assert numbered(on_john_a) == numbered(on_john_b), "the devices disagree"
        assert [o for o, _ in numbered(on_john_a)] == list(range(start_at + 1, start_at + 11))
        last = start_at + 10
        await john_a.close()
        await john_b.close()

        missed = [f"while away {i}" for i in range(4)]
        await send_all(carol_a, missed)  # numbered on host A's request
        await own_copies(carol_a, missed)

        again = await on_b()
        hello = await resume(again, tokens[JOHN], {"epoch": epoch, "offset": last})
        assert hello["recovered"] is True, hello
        assert hello["stream"] == {"epoch": epoch, "offset": last + len(missed)}
        assert numbered(await receive(again, len(missed))) == [
            (last + 1 + i, text) for i, text in enumerate(missed)]
        await send_all(jane_b, ["live on B"])
        assert numbered([await again.expect("new_message")]) == [(last + 5, "live on B")]
        await again.silent(0.5)

        await until_silent(carol_a, 0.3)
        await carol_a.send("send_message", {"chat_id": GENERAL, "text": "mine"}, ref=7)
        mine = [await carol_a.recv(), await carol_a.recv()]
        assert [f["event"] for f in mine] == ["new_message", "ack"], "the ack came first"


def redis_command(redis: RedisServer, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", redis.port), timeout=2) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(256)


async def test_redis_losing_its_data_changes_the_epoch(
        gateway_process: StartProcess, backend: DevBackend, redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john = await on_a()
        epoch = (await john.auth(tokens[JOHN]))["stream"]["epoch"]
        jane = await on_b(tokens[JANE])
        await send_all(jane, ["kept 1", "kept 2"])
        last = numbered(await receive(john, 2))[-1][0]
        await john.close()

        assert redis_command(redis_server, b"FLUSHALL").startswith(b"+OK")
        again = await on_b()
        hello = await resume(again, tokens[JOHN], {"epoch": epoch, "offset": last})
        assert hello["recovered"] is False, "a replay from a stream Redis lost"
        assert hello["stream"]["epoch"] != epoch
        await drain(jane, quiet=0.3)

        # Jane stayed connected: once the hosts have registered their users again (10 s at
        # most), her next event starts a new stream, announced first.
        deadline = time.monotonic() + 15
        frames: list[dict[str, Any]] = []
        while not any(f["event"] == "stream_reset" for f in frames):
            assert time.monotonic() < deadline, f"no stream_reset after Redis lost it: {frames}"
            await again.send("send_message", {"chat_id": GENERAL, "text": "probe"})
            frames += await until_silent(jane, 0.5)
        at = next(i for i, f in enumerate(frames) if f["event"] == "stream_reset")
        reset, following = frames[at]["data"], frames[at + 1]
        assert reset["offset"] == 0 and reset["epoch"] != epoch, reset
        assert (following["event"], following["offset"]) == ("new_message", 1), following
        assert all("offset" not in f for f in frames[:at]), "numbered in a stream Redis lost"


async def test_redis_restarted_mid_stream(gateway_process: StartProcess, backend: DevBackend,
                                          redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john_a, jane_a, jane_b = await on_a(), await on_a(), await on_b()
        await john_a.auth(tokens[JOHN])
        before = (await jane_a.auth(tokens[JANE]))["stream"]
        await jane_b.auth(tokens[JANE])
        everyone: tuple[Client, ...] = (john_a, jane_a, jane_b)
        seen: dict[Client, list[dict[str, Any]]] = {client: [] for client in everyone}

        async def settle(quiet: float = 1.0) -> None:
            for client, frames in zip(everyone, await drain(*everyone, quiet=quiet),
                                      strict=True):
                seen[client].extend(frames)

        await send_all(john_a, ["before 1", "before 2"])
        await settle()
        assert numbered(seen[jane_a]) == numbered(seen[jane_b])
        assert all(len(numbered(seen[c])) == 2 for c in everyone), seen

        redis_server.stop()
        await asyncio.sleep(0.5)
        await send_all(john_a, [f"outage {i}" for i in range(5)])
        await send_all(jane_b, ["from B"])
        late = await on_b()  # authenticates while Redis is out: no stream to speak of
        hello = await late.auth(tokens[JOHN])
        assert "stream" not in hello, hello
        everyone += (late,)
        seen[late] = []
        await settle(0.5)
        for client in (john_a, jane_a):
            got = [f for f in seen[client] if f["data"].get("text", "").startswith("outage")]
            assert len(got) == 5 and all("offset" not in f for f in got), got
            assert "from B" not in texts(seen[client]), "crossed hosts without Redis"
        assert texts(seen[jane_b])[-1:] == ["from B"] and "offset" not in seen[jane_b][-1]

        redis_server.start()
        restarted = time.monotonic()
        # each host says it routes through Redis again once it has delivered what it kept and
        # started the affected streams anew
        while not all(host.output().count(ROUTING) >= 2 for host in (host_a, host_b)):
            assert time.monotonic() - restarted < 12, (
                f"a host did not come back within 12 s of Redis:\nhost A:\n{host_a.output()}"
                f"\nhost B:\n{host_b.output()}")
            await asyncio.sleep(0.1)
        await settle()
        for client in everyone:
            assert any(f["event"] == "stream_reset" for f in seen[client]), (client, seen)

        # what each host kept for the other arrived, before the reset
        for client, kept in ((jane_b, [f"outage {i}" for i in range(5)]),
                             (john_a, ["from B"]), (jane_a, ["from B"])):
            frames = seen[client]
            reset_at = max(i for i, f in enumerate(frames) if f["event"] == "stream_reset")
            assert all(t in texts(frames[:reset_at]) for t in kept), (client, frames)
        resets = {c: [f["data"] for f in seen[c] if f["event"] == "stream_reset"]
                  for c in everyone}
        assert resets[jane_a][-1] == resets[jane_b][-1], "Jane's devices disagree"
        assert resets[jane_a][-1]["epoch"] != before["epoch"]
        assert all(r[-1]["offset"] == 0 for r in resets.values()), resets

        await send_all(john_a, ["after"])
        await settle()
        for client in everyone:
            after = [f for f in seen[client] if f["data"].get("text") == "after"]
            assert [f["offset"] for f in after] == [1], (client, seen[client])
            twice = {t: n for t, n in Counter(texts(seen[client])).items() if n > 1}
            assert not twice, f"delivered more than once: {twice}"
        assert Counter(texts(seen[jane_b])) == Counter(texts(seen[jane_a])), "Jane's devices"


# --- what a host keeps for the others while Redis is out -------------------------------------


def test_outbox_keeps_at_most_its_size_and_age_oldest_dropped_first() -> None:
    now = [0.0]
    outbox = Outbox(size=3, age=60.0, clock=lambda: now[0])
    events = [bus.Publish([JOHN], "new_message", b'{"n":%d}' % i) for i in range(5)]
    assert [outbox.add(e) for e in events] == [0, 0, 0, 1, 1]
    assert outbox.take() == (events[2:], 0)
    assert len(outbox) == 0

    for event in events[:2]:
        outbox.add(event)
        now[0] += 30.0
    assert outbox.add(events[2]) == 1, "the event kept 60 s is dropped"
    now[0] += 30.0
    taken, dropped = outbox.take()
    assert (taken, dropped) == ([events[2]], 1)
    outbox.add(events[3])
    outbox.give_back(taken)  # not delivered: back ahead of what came since
    assert outbox.take() == ([events[2], events[3]], 0)
