"""Two hosts sharing one Redis (``REDIS_URL``), as docs/protocol.md ("Delivery" and the internal
API) promises: every event reaches every online member's connection exactly once whichever host
it is on, per-sender order holds across hosts, delivery inside a host survives a Redis outage
and delivery across hosts comes back after it, the per-user connection limit and the internal
API span the whole deployment, and both hosts exit 0 on SIGTERM.

Each test runs its own ``redis-server`` on a free port (stopped and started again where the
test needs an outage) and two ``python -m gogate`` processes on different ports, the two hosts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import (
    CAROL,
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    KEY,
    Client,
    GatewayProcess,
    StartProcess,
    client_factory,
    free_port,
    http_get,
    metric_value,
)

from gogate.devbackend import DevBackend

ROUTING = "routing between hosts through Redis"
QUIET = 1.0  # seconds of silence that count as "nothing more is coming"


class RedisServer:
    """A ``redis-server`` of this test's own, on a fixed port, that can be stopped and started
    again on the same port."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "redis-server already runs"
        log = (self.workdir / f"redis-{self._starts}.log").open("wb")
        self._starts += 1
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer PING on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        assert not self.ping(), "something still answers on the Redis port"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH: these tests need a real Redis "
                    f"(PATH={os.environ.get('PATH', '')})")
    server = RedisServer(binary, free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


async def start_hosts(gateway_process: StartProcess, backend: DevBackend, redis: RedisServer,
                      **extra: str) -> tuple[GatewayProcess, GatewayProcess]:
    """Host A (two workers) and host B (one worker), sharing ``redis``; returns once both say
    they route through Redis."""
    common = {"BACKEND_API_URL": backend.url, "INTERNAL_API_KEY": KEY, "REDIS_URL": redis.url,
              "LOG_LEVEL": "info", "RATE_LIMIT": "0", **extra}
    host_a = gateway_process(env={**common, "WORKERS": "2"}, wait=False)
    host_b = gateway_process(env={**common, "WORKERS": "1"}, wait=False)
    await asyncio.gather(asyncio.to_thread(host_a.wait_ready),
                         asyncio.to_thread(host_b.wait_ready))
    deadline = time.monotonic() + 15
    for host in (host_a, host_b):
        while ROUTING not in host.output():
            assert time.monotonic() < deadline, f"no {ROUTING!r} in:\n{host.output()}"
            assert host.proc.poll() is None, f"host exited:\n{host.output()}"
            await asyncio.sleep(0.05)
    return host_a, host_b


async def until_silent(client: Client, quiet: float = QUIET) -> list[dict[str, Any]]:
    """Every frame until none arrives for ``quiet`` seconds."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            frames.append(await client.recv(quiet))
        except TimeoutError:
            return frames


async def drain(*clients: Client, quiet: float = QUIET) -> list[list[dict[str, Any]]]:
    return list(await asyncio.gather(*(until_silent(c, quiet) for c in clients)))


def events(frames: list[dict[str, Any]]) -> list[str]:
    return [f["event"] for f in frames]


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["text"] for f in frames if f["event"] == "new_message"]


async def internal(host: GatewayProcess, method: str, path: str, body: Any = None
                   ) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{host.internal_port}{path}"
    async with aiohttp.ClientSession() as session, session.request(
            method, url, json=body, headers={"X-Internal-API-Key": KEY}) as response:
        raw = await response.read()
        return response.status, (await response.json(content_type=None) if raw else None)


# --- 1. exactly once across hosts ------------------------------------------------------------


async def test_events_cross_hosts_exactly_once(gateway_process: StartProcess,
                                               backend: DevBackend,
                                               redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john = await on_a(tokens[JOHN])
        jane_a = await on_a(tokens[JANE])
        jane_b = await on_b(tokens[JANE])
        dave_b = await on_b(tokens[DAVE])

        await john.send("send_message", {"chat_id": GENERAL, "text": "hello across"}, ref=1)
        mine, on_jane_a, on_jane_b, on_dave = await drain(john, jane_a, jane_b, dave_b)
        assert sorted(events(mine)) == ["ack", "new_message"], mine
        assert texts(mine) == ["hello across"]
        message_id = next(f for f in mine if f["event"] == "ack")["data"]["message_id"]
        for frames in (on_jane_a, on_jane_b):
            assert events(frames) == ["new_message"], frames
            assert frames[0]["data"]["id"] == message_id
        assert on_dave == [], "a non-member received a chat 1 message"

        # the other way: from host B to host A
        await jane_b.send("send_message", {"chat_id": GENERAL, "text": "hello back"})
        mine, on_john, on_jane_a, on_dave = await drain(jane_b, john, jane_a, dave_b)
        for frames in (mine, on_john, on_jane_a):
            assert texts(frames) == ["hello back"], frames
            assert events(frames) == ["new_message"], frames
        assert on_dave == []

        await john.send("typing", {"chat_id": GENERAL, "is_typing": True})
        mine, on_jane_a, on_jane_b, on_dave = await drain(john, jane_a, jane_b, dave_b)
        assert mine == [], "the typist got its own typing event"
        for frames in (on_jane_a, on_jane_b):
            assert events(frames) == ["user_typing"], frames
            assert frames[0]["data"]["user_id"] == JOHN
            assert frames[0]["data"]["is_typing"] is True
        assert on_dave == []

        await john.send("add_reaction", {"message_id": message_id, "emoji": "👍",
                                         "chat_id": GENERAL})
        mine, on_jane_a, on_jane_b, on_dave = await drain(john, jane_a, jane_b, dave_b)
        for frames in (mine, on_jane_a, on_jane_b):
            assert events(frames) == ["new_reaction"], frames
            assert frames[0]["data"]["message_id"] == message_id
            assert frames[0]["data"]["user_id"] == JOHN
        assert on_dave == []


# --- 2. per-sender order across hosts --------------------------------------------------------


async def test_per_sender_order_across_hosts(gateway_process: StartProcess,
                                             backend: DevBackend,
                                             redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john = await on_a(tokens[JOHN])
        jane = await on_b(tokens[JANE])
        sent = [f"in order {i:03d}" for i in range(100)]

        async def send_all() -> None:
            for text in sent:
                await john.send("send_message", {"chat_id": GENERAL, "text": text})

        async def receive() -> list[dict[str, Any]]:
            return [await jane.recv(10.0) for _ in sent]

        _, got = await asyncio.gather(send_all(), receive())
        assert texts(got) == sent
        assert await until_silent(jane) == [], "more than one copy arrived"
        await until_silent(john, 0.1)


# --- 3. Redis outage -------------------------------------------------------------------------


async def test_redis_outage_keeps_local_delivery_and_recovers(
        gateway_process: StartProcess, backend: DevBackend, redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john, jane_a = await on_a(tokens[JOHN]), await on_a(tokens[JANE])
        jane_b, carol_b = await on_b(tokens[JANE]), await on_b(tokens[CAROL])
        everyone = (john, jane_a, jane_b, carol_b)
        seen: dict[Client, list[dict[str, Any]]] = {c: [] for c in everyone}

        async def settle() -> None:
            for client, frames in zip(everyone, await drain(*everyone), strict=True):
                seen[client].extend(frames)

        await john.send("send_message", {"chat_id": GENERAL, "text": "before"})
        await settle()
        assert all(texts(seen[c]) == ["before"] for c in everyone), seen

        redis_server.stop()
        await asyncio.sleep(0.5)
        # inside each host, chat goes on
        await john.send("send_message", {"chat_id": GENERAL, "text": "outage on A"})
        await jane_b.send("send_message", {"chat_id": GENERAL, "text": "outage on B"})
        await settle()
        for client in (john, jane_a):
            assert "outage on A" in texts(seen[client]), (client, seen[client])
        for client in (jane_b, carol_b):
            assert "outage on B" in texts(seen[client]), (client, seen[client])
        status, body, _ = await http_get(f"http://127.0.0.1:{host_a.internal_port}/metrics")
        assert status == 200
        kept = metric_value(body.decode(), "gogate_redis_outbox_events")
        assert kept >= 1, "host A does not keep the event it owes host B"

        redis_server.start()
        restarted = time.monotonic()
        probe = 0
        while True:
            probe += 1
            await john.send("send_message", {"chat_id": GENERAL, "text": f"probe {probe}"})
            try:
                while True:
                    frame = await jane_b.recv(0.5)
                    seen[jane_b].append(frame)
                    if frame["event"] == "new_message" and \
                            frame["data"]["text"].startswith("probe "):
                        break
                break
            except TimeoutError:
                assert time.monotonic() - restarted < 10, (
                    "delivery across hosts did not resume within 10 s of Redis coming "
                    f"back\nhost A:\n{host_a.output()}\nhost B:\n{host_b.output()}")
        await settle()

        after = [f"after {i}" for i in range(5)]
        for text in after[:3]:
            await john.send("send_message", {"chat_id": GENERAL, "text": text})
        for text in after[3:]:
            await carol_b.send("send_message", {"chat_id": GENERAL, "text": text})
        await settle()
        for client in everyone:
            counts = Counter(texts(seen[client]))
            assert [counts[t] for t in after] == [1] * len(after), (client, counts)
            twice = {t: n for t, n in counts.items() if n > 1}
            assert not twice, f"delivered more than once: {twice}"


# --- 4. the per-user limit across hosts ------------------------------------------------------


async def test_connection_limit_counts_every_host(gateway_process: StartProcess,
                                                  backend: DevBackend,
                                                  redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server,
                                       MAX_CONNECTIONS_PER_USER="2")
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        first, second = await on_a(tokens[CAROL]), await on_a(tokens[CAROL])

        third = await on_b()
        await third.send("auth", {"token": tokens[CAROL]})
        await third.expect_error("TOO_MANY_CONNECTIONS")
        assert await third.closed() == 1008

        await first.close()
        closed = time.monotonic()
        while True:
            fresh = await on_b()
            await fresh.send("auth", {"token": tokens[CAROL]})
            frame = await fresh.recv()
            if frame["event"] == "auth_success":
                break
            assert frame["data"]["code"] == "TOO_MANY_CONNECTIONS", frame
            assert time.monotonic() - closed < 1.5, "the freed slot was not seen on host B"
            await asyncio.sleep(0.1)

        extra = await on_b()
        await extra.send("auth", {"token": tokens[CAROL]})
        await extra.expect_error("TOO_MANY_CONNECTIONS")
        assert await extra.closed() == 1008
        await second.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="alive")
        assert (await second.expect("ack"))["ref"] == "alive"


# --- 5. the internal API spans the deployment ------------------------------------------------


async def test_internal_api_spans_hosts(gateway_process: StartProcess, backend: DevBackend,
                                        redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server,
                                       MEMBERS_CACHE_TTL="60")
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john = await on_a(tokens[JOHN])
        jane, carol = await on_b(tokens[JANE]), await on_b(tokens[CAROL])

        status, answer = await internal(host_a, "GET", "/api/internal/v1/online?user_ids=1,2,3,4")
        assert (status, answer) == (200, {"online": [JOHN, JANE, CAROL]})

        status, _ = await internal(host_a, "POST", "/api/internal/v1/publish", {
            "event": "notice", "data": {"n": 1}, "user_ids": [JANE]})
        assert status == 202
        frame = await jane.recv()
        assert frame.pop("offset") > 0, frame  # a stream event, numbered per user
        assert frame == {"event": "notice", "data": {"n": 1}}
        assert await until_silent(jane) == []
        assert await until_silent(john, 0.1) == []

        status, _ = await internal(host_b, "POST", "/api/internal/v1/publish", {
            "event": "chat_notice", "data": {"n": 2}, "chat_id": GENERAL})
        assert status == 202
        for client in (john, jane, carol):
            frame = await client.recv()
            assert frame.pop("offset") > 0, frame
            assert frame == {"event": "chat_notice", "data": {"n": 2}}
        assert await drain(john, jane, carol) == [[], [], []]

        # warm both hosts' member caches for chat 1
        await john.send("send_message", {"chat_id": GENERAL, "text": "warm A"})
        await jane.send("send_message", {"chat_id": GENERAL, "text": "warm B"})
        for frames in await drain(john, jane, carol):
            assert sorted(texts(frames)) == ["warm A", "warm B"], frames

        async with aiohttp.ClientSession() as session, session.delete(
                f"{backend.url}/api/dev/chats/{GENERAL}/members/{CAROL}") as response:
            assert response.status == 204
        await jane.send("send_message", {"chat_id": GENERAL, "text": "cached"})
        on_john, on_jane, on_carol = await drain(john, jane, carol)
        assert texts(on_carol) == ["cached"], "host B did not use its cached member list"

        status, _ = await internal(host_a, "POST",
                                   f"/api/internal/v1/chats/{GENERAL}/members/invalidate")
        assert status == 204
        await asyncio.sleep(0.5)
        await jane.send("send_message", {"chat_id": GENERAL, "text": "after invalidate B"})
        await john.send("send_message", {"chat_id": GENERAL, "text": "after invalidate A"})
        on_john, on_jane, on_carol = await drain(john, jane, carol)
        assert on_carol == [], "host B kept the member list that host A invalidated"
        for frames in (on_john, on_jane):
            assert sorted(texts(frames)) == ["after invalidate A", "after invalidate B"]


# --- 6. shutdown -----------------------------------------------------------------------------


async def test_sigterm_stops_both_hosts_with_exit_0(gateway_process: StartProcess,
                                                    backend: DevBackend,
                                                    redis_server: RedisServer) -> None:
    tokens = backend.tokens()
    host_a, host_b = await start_hosts(gateway_process, backend, redis_server,
                                       SHUTDOWN_TIMEOUT="5")
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john, jane = await on_a(tokens[JOHN]), await on_b(tokens[JANE])
        host_a.signal(signal.SIGTERM)
        host_b.signal(signal.SIGTERM)
        assert await john.closed(10) == 1001
        assert await jane.closed(10) == 1001
        codes = await asyncio.gather(asyncio.to_thread(host_a.wait, 20),
                                     asyncio.to_thread(host_b.wait, 20))
        assert codes == [0, 0], f"host A:\n{host_a.output()}\nhost B:\n{host_b.output()}"
