"""Readmitting a crowd: the listening socket's queue (``LISTEN_BACKLOG``) and the pace of new
connections per worker (``MAX_CONNECT_RATE``), over real sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import GENERAL, JANE, JOHN, MakeGateway, client_factory, metric_value, metrics_text

from gogate.server import Gateway

SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


def listen_queue(port: int) -> int:
    """The accept queue of the socket listening on ``port``, as the kernel reports it (``ss``
    shows it as the Send-Q of a listening socket)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out and out[0] == "LISTEN", out
    return int(out[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.parametrize("backlog", [None, 321])
async def test_listen_backlog_reaches_the_socket(make_gateway: MakeGateway,
                                                 backlog: int | None) -> None:
    gateway = await make_gateway(**({} if backlog is None else {"listen_backlog": backlog}))
    expected = min(4096 if backlog is None else backlog, SOMAXCONN)
    assert listen_queue(gateway.port) == expected


async def upgrade(port: int) -> tuple[int, dict[str, str], asyncio.StreamWriter]:
    """One WebSocket upgrade request: the answer's status and headers, and the socket (left
    open: an admitted connection stays until the test closes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines if line)}
    return int(status.split()[1]), headers, writer


async def test_upgrades_beyond_the_connect_rate_get_503_and_open_connections_keep_working(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(max_connect_rate=5)
    async with client_factory(gateway.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        answers = await asyncio.gather(*(upgrade(gateway.port) for _ in range(20)))
        try:
            statuses = [status for status, _, _ in answers]
            refused = [headers for status, headers, _ in answers if status == 503]
            assert set(statuses) == {101, 503}, statuses
            # A bucket of five, two taken by John and Jane, refilled at 5/s during the burst.
            assert 3 <= statuses.count(101) <= 10, statuses
            assert all(headers.get("retry-after") == "1" for headers in refused), refused

            await john.send("send_message", {"chat_id": GENERAL, "text": "still here"}, ref=1)
            mine = [await john.recv(), await john.recv()]  # the ack and the message itself
            assert sorted(frame["event"] for frame in mine) == ["ack", "new_message"], mine
            assert (await jane.expect("new_message"))["data"]["text"] == "still here"
            text = await metrics_text(gateway)
            assert metric_value(text, "gogate_upgrades_refused_total",
                                reason="connect_rate") == len(refused)
        finally:
            for _, _, writer in answers:
                writer.close()

        await asyncio.sleep(1.0)  # the bucket refills: a newcomer is admitted again
        assert (await upgrade_status(gateway)) == 101


async def upgrade_status(gateway: Gateway) -> int:
    status, _, writer = await upgrade(gateway.port)
    writer.close()
    return status


async def test_without_a_connect_rate_a_burst_is_admitted(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    statuses = await asyncio.gather(*(upgrade_status(gateway) for _ in range(40)))
    assert statuses == [101] * 40
