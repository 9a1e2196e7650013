"""Revocation: ``POST /api/internal/v1/users/{id}/disconnect``, seen from outside.

Every connection of the user, on every worker and every host, is closed 4001 with the given
reason; the call answers how many this host closed; from then on the user's tokens issued no
later than the call are refused (``token revoked``) everywhere, by a worker that starts later
and by a host that connects to Redis later too; a token issued after it is accepted. Both ways
of verifying tokens are exercised: by the backend (with the validation cache) and locally
(the development backend's RS256 key). Everything runs for real: sockets, the development
backend, worker processes, redis-server.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import (
    JANE,
    JOHN,
    KEY,
    Client,
    GatewayProcess,
    MakeGateway,
    StartProcess,
    backend_calls,
    client_factory,
    free_port,
    metric_value,
    metrics_text,
    set_fault,
)
from test_auth import mint, works
from test_redis import RedisServer, start_hosts
from test_workers import on_worker, start, worker_pids

from gogate.devbackend import DevBackend

REFUSED = "Authentication failed: token revoked"


def disconnect_path(user_id: int | str) -> str:
    return f"/api/internal/v1/users/{user_id}/disconnect"


async def disconnect(internal_port: int, user_id: int | str, body: Any = None, *,
                     raw: bytes | None = None, key: str | None = KEY) -> tuple[int, Any]:
    """The call as the backend makes it; the status and the JSON answer."""
    headers = {} if key is None else {"X-Internal-API-Key": key}
    kwargs: dict[str, Any] = {"headers": headers}
    if raw is not None:
        kwargs["data"] = raw
    elif body is not None:
        kwargs["json"] = body
    url = f"http://127.0.0.1:{internal_port}{disconnect_path(user_id)}"
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:
        text = await response.read()
        return response.status, (await response.json(content_type=None) if text else None)


async def revoke(internal_port: int, user_id: int, body: Any = None) -> tuple[int, float]:
    """Disconnect the user; the connections closed on that host and a moment after the
    call (the call's own moment lies before it)."""
    status, answer = await disconnect(internal_port, user_id, body)
    assert status == 200, (status, answer)
    return answer["closed"], time.time()


async def token_after(backend: DevBackend, user_id: int, moment: float) -> str:
    """A token issued in a whole second later than ``moment`` (``iat`` counts seconds)."""
    await asyncio.sleep(max(0.0, math.floor(moment) + 1 - time.time()))
    return await mint(backend, user_id, 3600)


async def refused(client: Client, token: str) -> None:
    await client.send("auth", {"token": token}, ref="old")
    frame = await client.expect_error("AUTH_FAILED")
    assert (frame["ref"], frame["data"]["message"]) == ("old", REFUSED)


async def revoked(client: Client, reason: str) -> None:
    """The server closed the connection with 4001 and ``reason``."""
    assert await client.closed() == 4001
    assert client.ws.close_reason == reason


# --- one worker -------------------------------------------------------------------------------


@pytest.mark.parametrize("local", [False, True], ids=["backend", "local JWT"])
async def test_disconnect_closes_the_users_connections_and_revokes_the_tokens(
        make_gateway: MakeGateway, backend: DevBackend, local: bool) -> None:
    gateway = await make_gateway(jwt_public_key=backend.public_key_path if local else "")
    assert gateway.internal is not None
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        john1, john2 = await connect(token), await connect(token)
        jane = await connect(await mint(backend, JANE, 3600))
        closed, after = await revoke(gateway.internal.port, JOHN, {"reason": "account disabled"})
        assert closed == 2
        await revoked(john1, "account disabled")
        await revoked(john2, "account disabled")
        await works(jane, JANE)

        await refused(await connect(), token)  # the cache forgot it, and iat is too early
        fresh = await token_after(backend, JOHN, after)
        again = await connect()
        assert (await again.auth(fresh))["user_id"] == JOHN
        await works(again, JOHN)

        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_auth_revocations_total") == 1
        assert metric_value(text, "gogate_closes_total", reason="revoked") == 2
        assert metric_value(text, "gogate_auth_refusals_total", reason="token revoked") == 1


async def test_the_reason_defaults_to_revoked_and_is_cut_to_123_bytes(
        make_gateway: MakeGateway, backend: DevBackend) -> None:
    gateway = await make_gateway()
    assert gateway.internal is not None
    port = gateway.internal.port
    async with client_factory(gateway.port) as connect:
        for body, reason in ((None, "revoked"), ({}, "revoked"), ({"reason": None}, "revoked"),
                             ({"reason": "é" * 100}, "é" * 61),  # 2 bytes each: 122 of 123
                             ({"reason": "x" * 200}, "x" * 123)):
            client = await connect(await mint(backend, JOHN, 3600))
            closed, after = await revoke(port, JOHN, body)
            assert closed == 1
            await revoked(client, reason)
            await asyncio.sleep(max(0.0, math.floor(after) + 1 - time.time()))


async def test_disconnect_needs_the_key_and_a_well_formed_request(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway()
    assert gateway.internal is not None
    port = gateway.internal.port
    async with client_factory(gateway.port) as connect:
        john = await connect(tokens[JOHN])
        for key in (None, "wrong-key", KEY[:-1]):
            assert await disconnect(port, JOHN, key=key) == (401, {"error": "Invalid API key"})
        for user_id in ("0", "-1", "abc", "1.5", "\u0661", str(2**63)):
            status, answer = await disconnect(port, user_id)
            assert status == 400 and "error" in answer, (user_id, status, answer)
        for raw in (b"not json", b'{"reason": 5}', b'{"why": "x"}', b"[]", b'"revoked"'):
            status, answer = await disconnect(port, JOHN, raw=raw)
            assert status == 400 and "error" in answer, (raw, status, answer)
        await john.silent(0.3)  # nothing was revoked
        await works(john, JOHN)
        assert await disconnect(port, 999) == (200, {"closed": 0})  # nobody online: harmless
        await works(john, JOHN)


async def test_an_auth_under_way_during_the_disconnect_is_refused(
        make_gateway: MakeGateway, backend: DevBackend) -> None:
    gateway = await make_gateway()
    assert gateway.internal is not None
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        client = await connect()
        await set_fault(backend, delay=0.8, match="/api/internal/v1/auth/validate", count=1)
        await client.send("auth", {"token": token}, ref="old")
        await asyncio.sleep(0.3)  # the backend is still answering
        closed, _ = await revoke(gateway.internal.port, JOHN)
        assert closed == 0
        frame = await client.expect_error("AUTH_FAILED")
        assert frame["data"]["message"] == REFUSED
        await client.silent(0.3)  # refused, not admitted, and the connection stays open
        status, answer = await disconnect(gateway.internal.port, JOHN)
        assert (status, answer) == (200, {"closed": 0})


# --- several workers --------------------------------------------------------------------------


async def test_disconnect_reaches_every_worker_and_a_replaced_one(
        gateway_process: StartProcess, backend: DevBackend) -> None:
    proc = await start(gateway_process, backend, 2)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(proc.port) as connect:
        john0 = await on_worker(connect, 0, token)
        john1 = await on_worker(connect, 1, token)
        jane = await on_worker(connect, 1, await mint(backend, JANE, 3600))
        validations = (await backend_calls(backend))["validate"]

        closed, after = await revoke(proc.internal_port, JOHN, {"reason": "signed out"})
        assert closed == 2
        await revoked(john0, "signed out")
        await revoked(john1, "signed out")
        await works(jane, JANE)
        for worker in (0, 1):
            await refused(await on_worker(connect, worker), token)
        # The cached validations were forgotten: the backend was asked again, on each worker.
        assert (await backend_calls(backend))["validate"] == validations + 2

        pids = await worker_pids(proc, [0, 1])
        os.kill(pids[1], signal.SIGKILL)  # its replacement learns the revocation at start
        await worker_pids(proc, [1], timeout=15.0, not_pids=[pids[1]])
        await refused(await on_worker(connect, 1), token)

        fresh = await token_after(backend, JOHN, after)
        first, second = [await on_worker(connect, worker, fresh) for worker in (0, 1)]
        await works(first, JOHN)
        assert (await second.expect("new_message"))["data"]["user"]["id"] == JOHN


# --- several hosts ----------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH: this test needs a real Redis")
    server = RedisServer(binary, free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


async def test_disconnect_reaches_every_host_and_one_that_starts_later(
        gateway_process: StartProcess, backend: DevBackend, redis: RedisServer) -> None:
    host_a, host_b = await start_hosts(gateway_process, backend, redis,
                                       JWT_PUBLIC_KEY=backend.public_key_path)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(host_a.port) as on_a, client_factory(host_b.port) as on_b:
        john_a = await on_a(token)
        john_b1, john_b2 = await on_b(token), await on_b(token)
        jane_b = await on_b(await mint(backend, JANE, 3600))

        closed, after = await revoke(host_a.internal_port, JOHN, {"reason": "stolen laptop"})
        assert closed == 1  # counted on host A only
        await revoked(john_a, "stolen laptop")
        await revoked(john_b1, "stolen laptop")
        await revoked(john_b2, "stolen laptop")
        await works(jane_b, JANE)
        await refused(await on_a(), token)
        await refused(await on_b(), token)

        # A host that joins afterwards learns the revocation from Redis.
        host_c = gateway_process(env={"BACKEND_API_URL": backend.url, "REDIS_URL":
                                      redis.url, "WORKERS": "1", "RATE_LIMIT": "0",
                                      "LOG_LEVEL": "info",
                                      "JWT_PUBLIC_KEY": backend.public_key_path}, wait=False)
        await asyncio.to_thread(host_c.wait_ready)
        await routing(host_c)
        async with client_factory(host_c.port) as on_c:
            await refused(await on_c(), token)
            fresh = await token_after(backend, JOHN, after)
            clients = [await connect(fresh) for connect in (on_a, on_b, on_c)]
            await works(clients[2], JOHN)
            for client in clients[:2]:
                assert (await client.expect("new_message"))["data"]["user"]["id"] == JOHN
        assert (await backend_calls(backend))["validate"] == 0  # every token verified locally


async def routing(host: GatewayProcess) -> None:
    """Wait until the host routes through Redis (it has read the revocations kept there)."""
    deadline = time.monotonic() + 15
    while "routing between hosts through Redis" not in host.output():
        assert time.monotonic() < deadline, host.output()
        assert host.proc.poll() is None, host.output()
        await asyncio.sleep(0.05)
