"""Shared fixtures: a real development backend, a real gateway on a real socket, and a
WebSocket client that is not picows (``websockets``).

Async tests run under uvloop, the loop the product runs on. ``make_gateway(**overrides)``
starts a gateway in this process with settings overrides; ``gateway_process`` runs
``python -m gogate`` as a subprocess for what only a process can show (signals, exit codes),
started by ``bench.procs`` as the benchmarks start it.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import uvloop
import websockets
from websockets.asyncio.client import ClientConnection

import gogate_fast
from bench.procs import GatewayProcess, child_env, free_port, launch_gateway
from gogate.config import FIELDS, Settings
from gogate.devbackend import DevBackend
from gogate.hub import LocalBroker
from gogate.server import Gateway

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-internal-key"

# Demo data of the development backend: chat 1 "General" holds users 1, 2, 3; chat 2 holds
# 1 and 2; chat 3 holds 3 and 4. User 4 (Dave) is not a member of chat 1.
GENERAL, JOHN_JANE, CAROL_DAVE = 1, 2, 3
JOHN, JANE, CAROL, DAVE = 1, 2, 3, 4


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs under uvloop; those marked ``both_loops`` under asyncio too."""
    if item.get_closest_marker("both_loops"):
        return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def backend() -> AsyncIterator[DevBackend]:
    """The development backend on a free port, with demo data, in this process."""
    dev = DevBackend(host="127.0.0.1", port=0, internal_api_key=KEY)
    await dev.start()
    yield dev
    await dev.stop()


@pytest.fixture
def tokens(backend: DevBackend) -> dict[int, str]:
    """Demo tokens by user id."""
    return backend.tokens()


def gateway_settings(backend_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "internal_host": "127.0.0.1", "internal_port": 0,
        "backend_api_url": backend_url, "internal_api_key": KEY, "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(backend: DevBackend) -> AsyncIterator[MakeGateway]:
    """Start gateways in this process: ``await make_gateway(rate_limit=0, ...)``."""
    started: list[Gateway] = []

    async def make(**overrides: Any) -> Gateway:
        gateway = Gateway(gateway_settings(base_url(backend), **overrides), LocalBroker())
        await gateway.start()
        started.append(gateway)
        return gateway

    before = gogate_fast.stats()
    yield make
    for gateway in started:
        await gateway.stop()
    if started:  # every connection's sink and send ring is released once it is gone
        await asyncio.sleep(0.05)
        gc.collect()
        assert gogate_fast.stats() == before, "sinks or send rings outlived their connections"


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway()


class Client:
    """A test's view of one WebSocket: send events, read events, see the close."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, event: str, data: Any = None, ref: Any = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": {} if data is None else data}
        if ref is not None:
            frame["ref"] = ref
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event, whatever it is."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        assert isinstance(frame, dict), frame
        return frame

    async def expect(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event, which must be ``event``; returns the whole frame."""
        frame = await self.recv(timeout)
        assert frame["event"] == event, frame
        return frame

    async def expect_error(self, code: str, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.expect("error", timeout)
        assert frame["data"]["code"] == code, frame
        return frame

    async def silent(self, within: float = 0.3) -> None:
        """Nothing arrives within ``within`` seconds."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame!r}")

    async def auth(self, token: str, ref: Any = None) -> dict[str, Any]:
        await self.send("auth", {"token": token}, ref)
        data: dict[str, Any] = (await self.expect("auth_success"))["data"]
        return data

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; returns the close code it sent."""
        async def drain() -> None:
            try:
                while True:
                    await self.ws.recv()
            except websockets.ConnectionClosed:
                return

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[Connect]:
    """Open a client to the default gateway; ``await connect(token)`` also authenticates."""
    async with client_factory(gateway.port) as make:
        yield make


class client_factory:
    """``async with client_factory(port) as connect: c = await connect(token)``."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.url = f"ws://{host}:{port}/ws"
        self.clients: list[Client] = []

    async def __aenter__(self) -> Connect:
        return self.connect

    async def connect(self, token: str | None = None, **kwargs: Any) -> Client:
        kwargs.setdefault("max_size", None)
        kwargs.setdefault("ping_interval", None)
        ws = await websockets.connect(self.url, open_timeout=5, **kwargs)
        client = Client(ws)
        self.clients.append(client)
        if token is not None:
            await client.auth(token)
        return client

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.close()


def base_url(backend: DevBackend) -> str:
    """The base URL of a started development backend."""
    assert backend.url is not None, "the development backend is not started"
    return backend.url


async def http_get(url: str, **kwargs: Any) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, await response.read(), dict(response.headers)


async def metrics_text(gateway: Gateway) -> str:
    assert gateway.internal is not None, "a worker of a supervisor serves no /metrics itself"
    status, body, _ = await http_get(f"http://127.0.0.1:{gateway.internal.port}/metrics")
    assert status == 200
    return body.decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text; 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


async def backend_calls(backend: DevBackend) -> dict[str, int]:
    status, body, _ = await http_get(f"{backend.url}/api/dev/stats")
    assert status == 200
    calls: dict[str, int] = msgspec.json.decode(body)["calls"]
    return calls


async def backend_post(backend: DevBackend, path: str, body: Any, method: str = "POST"
                       ) -> Any:
    async with aiohttp.ClientSession() as session, session.request(
            method, base_url(backend) + path, json=body) as response:
        assert response.status < 300, (response.status, await response.text())
        return await response.json() if response.status != 204 else None


async def set_fault(backend: DevBackend, **fault: Any) -> None:
    """Make the development backend slow or failing: delay=, status=, match=, count=."""
    await backend_post(backend, "/api/dev/faults", fault, method="PUT")


async def clear_fault(backend: DevBackend) -> None:
    async with aiohttp.ClientSession() as session, session.delete(
            base_url(backend) + "/api/dev/faults") as response:
        assert response.status == 204


# --- the gateway as a process -------------------------------------------------------------

StartProcess = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[StartProcess]:
    """Start ``python -m gogate`` with env overrides; ``start(env={...}, args=[...])``.
    Ports are chosen free unless given; the process runs in ``tmp_path``, logs there, and is
    killed at teardown if still running."""
    started: list[GatewayProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None,
              wait: bool = True) -> GatewayProcess:
        # No setting leaks in from the caller's environment.
        full_env = child_env({"PORT": str(free_port()), "INTERNAL_PORT": str(free_port()),
                              "HOST": "127.0.0.1", "INTERNAL_API_KEY": KEY,
                              "PYTHONUNBUFFERED": "1", **(env or {})},
                             drop={f.env for f in FIELDS})
        proc = launch_gateway(full_env, args or [], cwd=tmp_path,
                              log=tmp_path / f"gateway-{len(started)}.log", wait=False)
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.kill()
