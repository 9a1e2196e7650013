"""``--workers N``: a supervisor and N worker processes sharing the port (docs/protocol.md,
"Delivery" and the internal API), seen from outside through ``python -m gogate`` against the
in-process development backend.

The kernel spreads connections over the workers; each upgrade names its worker in
``X-Gogate-Worker``, so a test opens connections until the ones it needs sit on the workers it
needs, and asserts the spread it relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Collection, Iterable
from typing import Any

import aiohttp
import websockets
from conftest import (
    CAROL,
    CAROL_DAVE,
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    KEY,
    Client,
    Connect,
    GatewayProcess,
    StartProcess,
    backend_calls,
    backend_post,
    client_factory,
    http_get,
    metric_value,
    set_fault,
)
from prometheus_client.parser import text_string_to_metric_families

from gogate.devbackend import DevBackend

PUBLISH = "/api/internal/v1/publish"


# --- helpers --------------------------------------------------------------------------------


async def start(gateway_process: StartProcess, backend: DevBackend, workers: int,
                args: list[str] | None = None, **env: str) -> GatewayProcess:
    """The gateway with ``workers`` workers, once every one of them answers ``/health``."""
    full = {"BACKEND_API_URL": str(backend.url), "RATE_LIMIT": "0", **env}
    if args is None:
        full["WORKERS"] = str(workers)
    proc = gateway_process(env=full, args=args, wait=False)
    await asyncio.to_thread(proc.wait_ready)
    pids = await worker_pids(proc, range(workers))
    assert sorted(pids) == list(range(workers)), (pids, proc.output())
    return proc


async def health(proc: GatewayProcess) -> dict[str, Any]:
    """``/health`` over a new connection: whichever worker the kernel picks answers."""
    status, body, _ = await http_get(f"http://127.0.0.1:{proc.port}/health")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


async def worker_pids(proc: GatewayProcess, indices: Iterable[int], timeout: float = 15.0,
                      not_pids: Collection[int] = ()) -> dict[int, int]:
    """Worker index → pid from ``/health`` answers, once every index of ``indices`` has
    answered from a pid not in ``not_pids``."""
    wanted = set(indices)
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= seen.keys():
        assert time.monotonic() < deadline, f"workers seen: {seen}\n{proc.output()}"
        try:
            answer = await health(proc)
        except aiohttp.ClientError:
            await asyncio.sleep(0.02)
            continue
        if answer["pid"] not in not_pids:
            seen[int(answer["worker"])] = int(answer["pid"])
    return seen


def worker_of(client: Client) -> int:
    assert client.ws.response is not None
    return int(client.ws.response.headers["X-Gogate-Worker"])


async def on_worker(connect: Connect, worker: int, token: str | None = None) -> Client:
    """A connection that sits on ``worker`` (authenticated with ``token`` if given)."""
    for _ in range(60):
        client = await connect()
        if worker_of(client) == worker:
            if token is not None:
                await client.auth(token)
            return client
        await client.close()
    raise AssertionError(f"no connection landed on worker {worker} in 60 tries")


async def internal(proc: GatewayProcess, method: str, path: str, body: Any = None
                   ) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{proc.internal_port}{path}"
    async with aiohttp.ClientSession() as session, session.request(
            method, url, json=body, headers={"X-Internal-API-Key": KEY}) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None)


async def publish(proc: GatewayProcess, body: dict[str, Any]) -> None:
    status, answer = await internal(proc, "POST", PUBLISH, body)
    assert status == 202, (status, answer)


async def online(proc: GatewayProcess, ids: str = "1,2,3,4") -> list[int]:
    status, answer = await internal(proc, "GET", f"/api/internal/v1/online?user_ids={ids}")
    assert status == 200, (status, answer)
    return sorted(answer["online"])


async def online_becomes(proc: GatewayProcess, expected: list[int], within: float = 2.0
                         ) -> None:
    deadline = time.monotonic() + within
    while (got := await online(proc)) != expected:
        assert time.monotonic() < deadline, f"online is {got}, expected {expected}"
        await asyncio.sleep(0.05)


async def metrics(proc: GatewayProcess) -> str:
    status, body, _ = await http_get(f"http://127.0.0.1:{proc.internal_port}/metrics")
    assert status == 200
    return body.decode()


async def receive(client: Client, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    return [await client.recv(timeout) for _ in range(count)]


async def silent_all(*clients: Client, within: float = 1.0) -> None:
    """Nothing more (no duplicate) reaches any of them within ``within`` seconds."""
    await asyncio.gather(*(c.silent(within) for c in clients))


async def drain(client: Client, quiet: float = 0.3) -> list[dict[str, Any]]:
    """Every frame until none arrives for ``quiet`` seconds."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            frames.append(await client.recv(quiet))
        except TimeoutError:
            return frames


def texts(frames: list[dict[str, Any]], sender: int | None = None) -> list[str]:
    return [f["data"]["text"] for f in frames if f["event"] == "new_message"
            and (sender is None or f["data"]["user"]["id"] == sender)]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- delivery across workers ----------------------------------------------------------------


async def test_each_device_gets_each_message_once_across_workers(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3)
    async with client_factory(proc.port) as connect:
        john_0 = await on_worker(connect, 0, tokens[JOHN])  # the sender
        john_2 = await on_worker(connect, 2, tokens[JOHN])  # the sender's other device
        jane_1 = await on_worker(connect, 1, tokens[JANE])
        jane_2 = await on_worker(connect, 2, tokens[JANE])
        carol_0 = await on_worker(connect, 0, tokens[CAROL])
        assert [worker_of(c) for c in (john_0, john_2, jane_1, jane_2, carol_0)] == [
            0, 2, 1, 2, 0]
        sent = [f"once {i}" for i in range(20)]
        for i, text in enumerate(sent):
            await john_0.send("send_message", {"chat_id": GENERAL, "text": text}, ref=i)

        mine = await receive(john_0, 2 * len(sent))
        assert texts(mine) == sent
        assert [f["ref"] for f in mine if f["event"] == "ack"] == list(range(len(sent)))
        for client in (john_2, jane_1, jane_2, carol_0):
            frames = await receive(client, len(sent))
            assert [f["event"] for f in frames] == ["new_message"] * len(sent), frames
            assert texts(frames) == sent
        await silent_all(john_0, john_2, jane_1, jane_2, carol_0)

        # typing from worker 1: everyone else once, none of Jane's own devices
        await jane_1.send("typing", {"chat_id": GENERAL, "is_typing": True})
        for client in (john_0, john_2, carol_0):
            frame = await client.expect("user_typing")
            assert frame["data"]["user_id"] == JANE
        await silent_all(john_0, john_2, jane_1, jane_2, carol_0)


async def test_per_sender_order_of_100_messages_across_workers(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 2)
    count = 100
    async with client_factory(proc.port) as connect:
        john = await on_worker(connect, 0, tokens[JOHN])
        jane = await on_worker(connect, 1, tokens[JANE])
        carol_0 = await on_worker(connect, 0, tokens[CAROL])
        carol_1 = await on_worker(connect, 1, tokens[CAROL])
        sent = {user: [f"{user}:{i:03d}" for i in range(count)] for user in (JOHN, JANE)}

        async def send_all() -> None:
            for i in range(count):  # interleaved, no waiting for acks
                await john.send("send_message", {"chat_id": GENERAL, "text": sent[JOHN][i]})
                await jane.send("send_message", {"chat_id": GENERAL, "text": sent[JANE][i]})

        _, *received = await asyncio.gather(
            send_all(), *(receive(c, 2 * count) for c in (john, jane, carol_0, carol_1)))
        for frames in received:
            assert len(texts(frames)) == 2 * count
            for user in (JOHN, JANE):
                assert texts(frames, user) == sent[user], user
        await silent_all(john, jane, carol_0, carol_1)


async def test_non_members_receive_nothing_on_any_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3)
    async with client_factory(proc.port) as connect:
        daves = [await on_worker(connect, w, tokens[DAVE]) for w in range(3)]
        john = await on_worker(connect, 0, tokens[JOHN])
        jane = await on_worker(connect, 1, tokens[JANE])
        carol = await on_worker(connect, 2, tokens[CAROL])

        await john.send("send_message", {"chat_id": GENERAL, "text": "members only"}, ref=1)
        message = await jane.expect("new_message")
        message_id = message["data"]["id"]
        assert (await carol.expect("new_message"))["data"]["id"] == message_id
        await jane.send("typing", {"chat_id": GENERAL, "is_typing": True})
        assert (await carol.expect("user_typing"))["data"]["user_id"] == JANE
        await john.send("add_reaction", {"message_id": message_id, "emoji": "+1",
                                         "chat_id": GENERAL})
        assert (await jane.expect("new_reaction"))["data"]["message_id"] == message_id
        await carol.send("mark_read", {"message_ids": [message_id], "chat_id": GENERAL})
        assert (await jane.expect("message_read"))["data"]["user_id"] == CAROL
        await publish(proc, {"event": "chat_updated", "data": {}, "chat_id": GENERAL})
        assert (await jane.expect("chat_updated"))["data"] == {}
        await silent_all(*daves)
        for client in (john, jane, carol):
            await drain(client)

        # and Dave's own chat with Carol reaches Carol on another worker, not John or Jane
        await daves[0].send("send_message", {"chat_id": CAROL_DAVE, "text": "just us"})
        frame = await carol.expect("new_message")
        assert frame["data"]["text"] == "just us"
        for dave in daves:
            assert (await dave.expect("new_message"))["data"]["text"] == "just us"
        await jane.silent(0.5)


async def test_connection_limit_per_user_holds_across_workers(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3, MAX_CONNECTIONS_PER_USER="2")
    async with client_factory(proc.port) as connect:
        john_0 = await on_worker(connect, 0, tokens[JOHN])
        john_1 = await on_worker(connect, 1, tokens[JOHN])

        for worker in (2, 0, 1):  # a third one is refused wherever it lands
            third = await on_worker(connect, worker)
            await third.send("auth", {"token": tokens[JOHN]})
            await third.expect_error("TOO_MANY_CONNECTIONS")
            assert await third.closed() == 1008, f"third connection on worker {worker}"

        # others are not affected, and the two held connections still work
        jane_2a = await on_worker(connect, 2, tokens[JANE])
        jane_2b = await on_worker(connect, 2, tokens[JANE])
        await jane_2a.send("send_message", {"chat_id": GENERAL, "text": "still here"})
        for client in (john_0, john_1, jane_2a, jane_2b):
            assert (await client.expect("new_message"))["data"]["text"] == "still here"

        await john_0.close()
        closed = time.monotonic()
        while True:  # the freed slot is available to another worker within about a second
            again = await on_worker(connect, 2)
            await again.send("auth", {"token": tokens[JOHN]})
            frame = await again.recv()
            if frame["event"] == "auth_success":
                break
            assert frame["data"]["code"] == "TOO_MANY_CONNECTIONS", frame
            assert time.monotonic() - closed < 1.5, "the closed connection's slot was not freed"
            await asyncio.sleep(0.05)

        fourth = await on_worker(connect, 0)
        await fourth.send("auth", {"token": tokens[JOHN]})
        await fourth.expect_error("TOO_MANY_CONNECTIONS")
        assert await fourth.closed() == 1008


async def test_connection_limit_holds_when_workers_race(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    """Six connections of one user, two on each worker, authenticate at the same moment:
    exactly two are accepted."""
    proc = await start(gateway_process, backend, 3, MAX_CONNECTIONS_PER_USER="2")
    async with client_factory(proc.port) as connect:
        clients = [await on_worker(connect, w) for w in (0, 1, 2, 0, 1, 2)]
        await asyncio.gather(*(c.send("auth", {"token": tokens[DAVE]}) for c in clients))
        answers = await asyncio.gather(*(c.recv() for c in clients))
        accepted = [c for c, a in zip(clients, answers, strict=True)
                    if a["event"] == "auth_success"]
        refused = [c for c, a in zip(clients, answers, strict=True)
                   if a["event"] == "error" and a["data"]["code"] == "TOO_MANY_CONNECTIONS"]
        assert (len(accepted), len(refused)) == (2, 4), answers
        assert await asyncio.gather(*(c.closed() for c in refused)) == [1008] * 4
        assert await online(proc) == [DAVE]


# --- the internal API across workers --------------------------------------------------------


async def test_online_covers_every_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3)
    async with client_factory(proc.port) as connect:
        assert await online(proc) == []
        john_1 = await on_worker(connect, 1, tokens[JOHN])
        john_2 = await on_worker(connect, 2, tokens[JOHN])
        carol_0 = await on_worker(connect, 0, tokens[CAROL])
        await on_worker(connect, 1)  # unauthenticated: nobody
        assert await online(proc) == [JOHN, CAROL]
        assert await online(proc, "3,4") == [CAROL]

        await john_1.close()
        await asyncio.sleep(0.3)
        assert await online(proc) == [JOHN, CAROL], "John still holds a device on worker 2"
        await john_2.close()
        await online_becomes(proc, [CAROL])
        await carol_0.close()
        await online_becomes(proc, [])


async def test_publish_reaches_receivers_on_every_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3)
    async with client_factory(proc.port) as connect:
        johns = [await on_worker(connect, w, tokens[JOHN]) for w in range(3)]
        daves = [await on_worker(connect, w, tokens[DAVE]) for w in range(3)]
        jane = await on_worker(connect, 1, tokens[JANE])
        carol = await on_worker(connect, 2, tokens[CAROL])
        everyone = [*johns, *daves, jane, carol]

        # three publishes, so that each worker in turn resolves the chat's members
        for n in range(3):
            await publish(proc, {"event": "chat_updated", "data": {"n": n}, "chat_id": GENERAL})
        for client in (*johns, jane, carol):
            frames = await receive(client, 3)
            assert {f["event"] for f in frames} == {"chat_updated"}, frames
            assert sorted(f["data"]["n"] for f in frames) == [0, 1, 2]
        await silent_all(*everyone)

        await publish(proc, {"event": "notice", "data": {"to": "users"},
                             "user_ids": [JOHN, DAVE]})
        for client in (*johns, *daves):
            frame = await client.recv()
            assert frame.pop("offset") > 0, frame  # a stream event, numbered per user
            assert frame == {"event": "notice", "data": {"to": "users"}}
        await silent_all(*everyone)

        big = {"blob": "x" * 1_500_000, "n": list(range(1000))}  # larger than the bus buffer
        await publish(proc, {"event": "big", "data": big, "user_ids": [JANE, CAROL]})
        for client in (jane, carol):
            frame = await client.recv()
            assert frame.pop("offset") > 0
            assert frame == {"event": "big", "data": big}
        await silent_all(*everyone, within=0.5)


async def test_invalidate_reaches_every_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3, MEMBERS_CACHE_TTL="60")
    async with client_factory(proc.port) as connect:
        johns = [await on_worker(connect, w, tokens[JOHN]) for w in range(3)]  # senders
        carols = [await on_worker(connect, w, tokens[CAROL]) for w in range(3)]
        jane = await on_worker(connect, 1, tokens[JANE])

        async def round_from_every_worker(label: str, receivers: list[Client]) -> None:
            """Each worker's John sends once (each worker resolves the members from its own
            cache); every receiver gets the three messages, once each."""
            for w, john in enumerate(johns):
                await john.send("send_message", {"chat_id": GENERAL, "text": f"{label} {w}"})
            for client in receivers:
                frames = await receive(client, 3)
                assert sorted(texts(frames)) == [f"{label} {w}" for w in range(3)], (
                    label, worker_of(client), frames)

        await round_from_every_worker("warm", [*johns, *carols, jane])  # fills every cache
        await backend_post(backend, f"/api/dev/chats/{GENERAL}/members/{CAROL}", None,
                           method="DELETE")
        await round_from_every_worker("cached", [*johns, *carols, jane])
        await silent_all(*johns, *carols, jane, within=0.3)

        status, answer = await internal(
            proc, "POST", f"/api/internal/v1/chats/{GENERAL}/members/invalidate")
        assert (status, answer) == (204, None)

        await round_from_every_worker("after", [*johns, jane])
        for n in range(3):  # and the internal publish, resolved by each worker in turn
            await publish(proc, {"event": "chat_updated", "data": {"n": n}, "chat_id": GENERAL})
        for client in (*johns, jane):
            frames = await receive(client, 3)
            assert sorted(f["data"]["n"] for f in frames) == [0, 1, 2], frames
        for carol in carols:
            try:
                await carol.silent(1.0)
            except AssertionError as exc:
                raise AssertionError(f"Carol on worker {worker_of(carol)} still receives chat "
                                     f"{GENERAL} after invalidate: {exc}") from None


async def test_metrics_cover_every_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3)
    async with client_factory(proc.port) as connect:
        john = await on_worker(connect, 0, tokens[JOHN])
        jane = await on_worker(connect, 1, tokens[JANE])
        await on_worker(connect, 1, tokens[CAROL])
        await john.send("send_message", {"chat_id": GENERAL, "text": "counted"})
        await jane.expect("new_message")

        expected = {"0": 1.0, "1": 2.0, "2": 0.0}
        deadline = time.monotonic() + 3.0
        while True:  # connections opened on the wrong worker are closed meanwhile
            text = await metrics(proc)
            got = {w: metric_value(text, "gogate_connections", worker=w) for w in expected}
            if got == expected:
                break
            assert time.monotonic() < deadline, (got, text)
            await asyncio.sleep(0.1)

        families = {f.name: f for f in text_string_to_metric_families(text)}
        workers_labelled = {s.labels.get("worker") for s in families["gogate_connections"]
                            .samples}
        assert workers_labelled == {"0", "1", "2"}
        assert metric_value(text, "gogate_workers") == 3
        assert metric_value(text, "gogate_worker_restarts_total") == 0
        assert "gogate_bus_events_total" in text
        assert metric_value(text, "gogate_bus_events_total", direction="forwarded") >= 1
        assert metric_value(text, "gogate_authenticated_connections", worker="1") == 2
        for line in text.splitlines():  # one HELP and TYPE per family
            if line.startswith("# TYPE "):
                assert text.count(line + "\n") == 1, line


# --- process lifetime ----------------------------------------------------------------------


async def test_killed_worker_is_replaced_while_the_others_deliver(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 3)
    pids = await worker_pids(proc, range(3))
    supervisor = proc.proc.pid
    assert supervisor not in pids.values()
    async with client_factory(proc.port) as connect:
        john_0 = await on_worker(connect, 0, tokens[JOHN])
        jane_1 = await on_worker(connect, 1, tokens[JANE])
        john_2 = await on_worker(connect, 2, tokens[JOHN])
        carol_2 = await on_worker(connect, 2, tokens[CAROL])
        assert await online(proc) == [JOHN, JANE, CAROL]

        os.kill(pids[2], signal.SIGKILL)
        killed = time.monotonic()
        # its clients are dropped
        await asyncio.gather(john_2.closed(5.0), carol_2.closed(5.0))
        await online_becomes(proc, [JOHN, JANE])
        assert metric_value(await metrics(proc), "gogate_workers") == 2, "not down yet?"

        # the surviving workers go on delivering, both ways, and accept new connections
        await john_0.send("send_message", {"chat_id": GENERAL, "text": "during outage"},
                          ref="o1")
        assert (await jane_1.expect("new_message"))["data"]["text"] == "during outage"
        assert texts(await receive(john_0, 2)) == ["during outage"]
        await jane_1.send("send_message", {"chat_id": GENERAL, "text": "reply in outage"})
        assert (await john_0.expect("new_message"))["data"]["text"] == "reply in outage"
        assert (await jane_1.expect("new_message"))["data"]["text"] == "reply in outage"
        assert alive(supervisor) and not alive(pids[2])
        for _ in range(5):
            extra = await connect(tokens[CAROL])
            assert worker_of(extra) in (0, 1)
            await extra.close()
        assert metric_value(await metrics(proc), "gogate_workers") == 2, (
            "worker 2 came back before the outage checks were done")

        # it is back within 15 s, under a new pid
        restarted = await worker_pids(proc, [2], timeout=15.0 - (time.monotonic() - killed),
                                      not_pids={pids[2]})
        assert restarted[2] != pids[2]
        assert alive(restarted[2])
        text = await metrics(proc)
        assert metric_value(text, "gogate_worker_restarts_total") >= 1
        deadline = time.monotonic() + 3.0
        while metric_value(text, "gogate_workers") != 3:
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
            text = await metrics(proc)

        # and it delivers again
        carol_back = await on_worker(connect, 2, tokens[CAROL])
        await john_0.send("send_message", {"chat_id": GENERAL, "text": "welcome back"})
        for client in (carol_back, jane_1):
            assert (await client.expect("new_message"))["data"]["text"] == "welcome back"
        await silent_all(carol_back, jane_1, within=0.5)
        assert proc.proc.poll() is None


async def test_sigterm_closes_every_client_1001_and_leaves_no_worker(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 2, args=["--workers", "2"],
                       SHUTDOWN_TIMEOUT="3")
    pids = await worker_pids(proc, range(2))
    async with client_factory(proc.port) as connect:
        clients = [await on_worker(connect, 0, tokens[JOHN]),
                   await on_worker(connect, 1, tokens[JANE]),
                   await on_worker(connect, 0),  # not authenticated yet
                   await on_worker(connect, 1)]
        proc.signal(signal.SIGTERM)
        signalled = time.monotonic()
        codes = await asyncio.gather(*(c.closed(timeout=8.0) for c in clients))
        assert codes == [1001] * len(clients), codes
        exit_code = await asyncio.to_thread(proc.wait, 3 + 5)
        assert exit_code == 0, proc.output()
        assert time.monotonic() - signalled < 3 + 5
        left = [pid for pid in pids.values() if alive(pid)]
        assert not left, f"worker processes left behind: {left}"
        assert not listening(proc.port)


async def test_sigterm_delivers_a_message_in_flight_to_every_worker_first(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    """The drain finishes backend calls in flight: their broadcast reaches the receivers on
    the other workers before those close with 1001, as it does on a single worker."""
    proc = await start(gateway_process, backend, 3, SHUTDOWN_TIMEOUT="5")
    async with client_factory(proc.port) as connect:
        john = await on_worker(connect, 0, tokens[JOHN])
        jane = await on_worker(connect, 1, tokens[JANE])
        carol = await on_worker(connect, 2, tokens[CAROL])
        await set_fault(backend, delay=1.0, match="/api/v1/messages")
        await john.send("send_message", {"chat_id": GENERAL, "text": "last words"},
                        ref="inflight")
        deadline = time.monotonic() + 5
        while (await backend_calls(backend)).get("send_message", 0) < 1:
            assert time.monotonic() < deadline, "the message never reached the backend"
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGTERM)

        async def until_closed(client: Client) -> tuple[list[str], int | None]:
            events: list[str] = []
            try:
                while True:
                    events.append((await client.recv(timeout=10.0))["event"])
            except websockets.ConnectionClosed:
                return events, client.ws.close_code

        got = await asyncio.gather(*(until_closed(c) for c in (john, jane, carol)))
        assert got == [(["new_message", "ack"], 1001), (["new_message"], 1001),
                       (["new_message"], 1001)], got
        assert await asyncio.to_thread(proc.wait, 10) == 0, proc.output()


async def test_workers_exit_when_the_supervisor_is_killed(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 2)
    pids = await worker_pids(proc, range(2))
    async with client_factory(proc.port) as connect:
        clients = [await on_worker(connect, w, tokens[JOHN]) for w in range(2)]
        proc.signal(signal.SIGKILL)
        codes = await asyncio.gather(*(c.closed(timeout=15.0) for c in clients))
        assert all(code is not None for code in codes), codes
    deadline = time.monotonic() + 15.0
    while left := [pid for pid in pids.values() if alive(pid)]:
        assert time.monotonic() < deadline, f"orphaned workers still running: {left}"
        await asyncio.sleep(0.1)
    assert not listening(proc.port)
