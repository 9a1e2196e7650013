"""What the gateway says about its connections: nothing per connection at INFO, a periodic
summary instead, one line per step at DEBUG (never a token), and the counts on ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from conftest import JOHN, MakeGateway, client_factory, metric_value, metrics_text

import gogate.lifecycle
from gogate.server import Gateway

N = 30
SUMMARY = re.compile(r"connections: (\d+) opened, (\d+) authenticated, (\d+) closed")


@pytest.fixture(autouse=True)
def short_summary_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gogate.lifecycle, "SUMMARY_PERIOD", 0.2)


async def churn(gateway: Gateway, token: str, count: int) -> None:
    """``count`` clients connect, authenticate and close, all at once."""
    async with client_factory(gateway.port) as connect:
        await asyncio.gather(*(connect(token) for _ in range(count)))


async def wait_for_metric(gateway: Gateway, name: str, value: float, **labels: str) -> None:
    for _ in range(100):
        if metric_value(await metrics_text(gateway), name, **labels) >= value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}{labels} never reached {value}")


def summed_summaries(caplog: pytest.LogCaptureFixture) -> tuple[int, int, int]:
    totals = [0, 0, 0]
    for record in caplog.records:
        if record.name == "gogate.server" and (match := SUMMARY.match(record.getMessage())):
            assert record.levelno == logging.INFO
            totals = [t + int(n) for t, n in zip(totals, match.groups(), strict=True)]
    return totals[0], totals[1], totals[2]


async def test_at_info_no_line_per_connection_but_a_summary(
        make_gateway: MakeGateway, tokens: dict[int, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gogate")
    # A short authentication timeout makes the heartbeat, which writes the summary, tick fast.
    gateway = await make_gateway(auth_timeout=1, max_connections_per_user=0)
    await churn(gateway, tokens[JOHN], N)
    await wait_for_metric(gateway, "gogate_connections_closed_total", N, code="1000")

    for _ in range(40):  # the summaries of the next beats cover every connection
        if summed_summaries(caplog) == (N, N, N):
            break
        await asyncio.sleep(0.05)
    assert summed_summaries(caplog) == (N, N, N)
    by_code = [int(n) for r in caplog.records if SUMMARY.match(r.getMessage())
               for n in re.findall(r"closed \(1000: (\d+)\)", r.getMessage())]
    assert sum(by_code) == N, [r.getMessage() for r in caplog.records]
    others = [r for r in caplog.records if r.name.startswith("gogate")
              and not SUMMARY.match(r.getMessage())]
    assert not [r for r in others if r.name == "gogate.conn"]
    assert len(others) < 5, [r.getMessage() for r in others]  # startup lines, not N of them

    text = await metrics_text(gateway)
    assert metric_value(text, "gogate_connections_opened_total") == N
    assert metric_value(text, "gogate_connections_authenticated_total") == N

    caplog.clear()  # nothing happens: no summary
    await asyncio.sleep(0.6)
    assert summed_summaries(caplog) == (0, 0, 0)
    assert not [r for r in caplog.records if SUMMARY.match(r.getMessage())]


async def test_at_debug_each_step_is_a_line_without_the_token(
        make_gateway: MakeGateway, tokens: dict[int, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gogate")
    gateway = await make_gateway()
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])
        await client.send_raw(b"binary")  # the gateway closes the connection: 1003
        assert await client.closed() == 1003
    await wait_for_metric(gateway, "gogate_connections_opened_total", 1)
    for _ in range(40):
        steps = [r.getMessage() for r in caplog.records if r.name == "gogate.conn"]
        if "disconnected" in steps:
            break
        await asyncio.sleep(0.05)
    assert steps == ["connected", "authenticated", "closing", "disconnected"], steps
    conn = [r for r in caplog.records if r.name == "gogate.conn"]
    assert len({vars(r)["conn_id"] for r in conn}) == 1
    connected = conn[0]
    assert connected.levelno == logging.DEBUG
    assert re.fullmatch(r"127\.0\.0\.1:\d+", vars(connected)["remote"])
    for record in caplog.records:
        assert tokens[JOHN] not in record.getMessage()
        assert all(tokens[JOHN] not in str(value) for value in vars(record).values())


async def test_a_refused_upgrade_is_counted_and_logged_at_debug_only(
        make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gogate")
    gateway = await make_gateway(allowed_origins=("https://chat.example.com",))
    async with client_factory(gateway.port) as connect:
        with pytest.raises(Exception, match="403"):
            await connect(origin="https://evil.example.net")
    text = await metrics_text(gateway)
    assert metric_value(text, "gogate_upgrades_refused_total", reason="origin") == 1
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
