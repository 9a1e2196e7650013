"""Micro-benchmark of one backend call: the CPU gogate spends on a ``POST /api/v1/messages``
with a small JSON body and a small JSON answer, against a yardstick.

Group ``backend-call``, one row per client, all against the tiny keep-alive server of
:mod:`bench.micro.httpd` (a process of its own: its CPU is not counted):

``raw-streams``       the yardstick: HTTP/1.1 keep-alive on one asyncio stream pair, the request
                      built as bytes, the answer read by ``Content-Length`` and decoded by
                      msgspec. The least a call can cost on this event loop.
``aiohttp-defaults``  an ``aiohttp.ClientSession`` as its documentation shows it: defaults,
                      ``json=`` body, ``await response.json()``.
``backend-client``    :meth:`gogate.backend.BackendClient.send_message`, the product's call,
                      without the metrics observer.
``backend-client+metrics``  the same with the worker's observer (``gogate_backend_calls`` and
                      the latency histogram), as the gateway runs it.

Each round runs :data:`CALLS` calls one after the other under uvloop, and the timer is this
process's CPU time divided by :data:`CALLS`: the table reads as **CPU seconds per call**
(waiting for the server costs no CPU, so it is not in the figures).

    python -m bench.micro -k backend_call
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Final

import aiohttp
import msgspec
import pytest
import uvloop

from gogate.backend import BackendClient
from gogate.metrics import Metrics

CALLS: Final = 50  # calls per round
ROUNDS: Final = 40
TOKEN: Final = "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VyX2lkIjoxMDAxfQ.c2lnbmF0dXJl"
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def cpu_per_call() -> float:
    """The benchmark's timer: CPU seconds of this process, in units of :data:`CALLS` calls."""
    return time.process_time() / CALLS


class MessageIds(msgspec.Struct):
    id: int
    chat_id: int


_decode_ids: Final = msgspec.json.Decoder(MessageIds).decode
_encode: Final = msgspec.json.Encoder().encode


class RawHttp:
    """The yardstick client: one keep-alive connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: bytes) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, port: int) -> RawHttp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, b"127.0.0.1:%d" % port)

    async def send_message(self, token: str, chat_id: int, text: str) -> MessageIds:
        body = _encode({"chat_id": chat_id, "content": text, "reply_to_id": None,
                        "attachment_ids": None})
        self._writer.write(
            b"POST /api/v1/messages HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
            b"Accept: application/json\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self._host, token.encode(), len(body), body))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = _CONTENT_LENGTH.search(head)
        payload = await self._reader.readexactly(int(match[1]) if match else 0)
        assert status == 201, head
        return _decode_ids(payload)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-m", "bench.micro.httpd"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(5)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


Call = Callable[[], Awaitable[int]]  # one call; returns the new message's id
Client = Callable[[int], AsyncIterator[Call]]


async def raw_streams(port: int) -> AsyncIterator[Call]:
    client = await RawHttp.open(port)

    async def call() -> int:
        return (await client.send_message(TOKEN, 42, "Running late")).id

    yield call
    await client.close()


async def aiohttp_defaults(port: int) -> AsyncIterator[Call]:
    url = f"http://127.0.0.1:{port}/api/v1/messages"
    async with aiohttp.ClientSession() as session:
        async def call() -> int:
            async with session.post(url, json={
                    "chat_id": 42, "content": "Running late", "reply_to_id": None,
                    "attachment_ids": None},
                    headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                data = await response.json()
                assert response.status == 201
                return int(data["id"])

        yield call


async def backend_client(port: int, metrics: bool = False) -> AsyncIterator[Call]:
    backend = BackendClient(f"http://127.0.0.1:{port}", "internal-key", timeout=10,
                            max_connections=100,
                            observe=Metrics().backend_call if metrics else None)
    await backend.start()

    async def call() -> int:
        return (await backend.send_message(TOKEN, 42, "Running late", None, None)).id

    yield call
    await backend.close()


async def backend_client_with_metrics(port: int) -> AsyncIterator[Call]:
    async for call in backend_client(port, metrics=True):
        yield call


@pytest.mark.benchmark(group="backend-call", timer=cpu_per_call)
@pytest.mark.parametrize("client", [
    pytest.param(raw_streams, id="raw-streams"),
    pytest.param(aiohttp_defaults, id="aiohttp-defaults"),
    pytest.param(backend_client, id="backend-client"),
    pytest.param(backend_client_with_metrics, id="backend-client+metrics"),
])
def test_backend_call(benchmark: Any, loop: asyncio.AbstractEventLoop, server_port: int,
                      client: Client) -> None:
    clients = client(server_port)
    call = loop.run_until_complete(anext(clients))

    async def calls() -> int:
        last = 0
        for _ in range(CALLS):
            last = await call()
        return last

    def round_of_calls() -> int:
        return loop.run_until_complete(calls())

    assert benchmark.pedantic(round_of_calls, rounds=ROUNDS, warmup_rounds=2) == 184467
    loop.run_until_complete(anext(clients, None))
