"""The HTTP surface of the contract, section 2: the public port's plain GET endpoints, the
upgrade's Origin check and connection limit, and ``/metrics`` on the internal port only."""

from __future__ import annotations

import json

import pytest
import websockets
from conftest import (
    GENERAL,
    JANE,
    JOHN,
    Connect,
    MakeGateway,
    client_factory,
    http_get,
    metric_value,
    metrics_text,
)
from websockets.exceptions import InvalidStatus

from gogate.server import Gateway


def public(gateway: Gateway, path: str) -> str:
    return f"http://127.0.0.1:{gateway.port}{path}"


async def test_health(gateway: Gateway) -> None:
    status, body, headers = await http_get(public(gateway, "/health"))
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ok" and health["service"] == "gogate"


async def test_root_is_plain_text_naming_the_endpoints(gateway: Gateway) -> None:
    status, body, headers = await http_get(public(gateway, "/"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "/ws" in text and "/health" in text


async def test_ws_without_upgrade_is_refused(gateway: Gateway) -> None:
    status, _, _ = await http_get(public(gateway, "/ws"))
    assert status in (400, 426)


@pytest.mark.parametrize("path", ["/nope", "/metrics", "/ws/extra", "/healthz",
                                  "/api/internal/v1/online?user_ids=1"])
async def test_unknown_path_is_404(gateway: Gateway, path: str) -> None:
    status, _, _ = await http_get(public(gateway, path))
    assert status == 404


async def test_upgrade_on_another_path_is_404(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{gateway.port}/chat", open_timeout=5)
    assert refused.value.response.status_code == 404


# --- Origin -----------------------------------------------------------------------------------

ORIGINS = ("https://*.example.com", "https://chat.buzz.io")


@pytest.mark.parametrize("origin", ["https://a.example.com", "https://deep.sub.example.com",
                                    "https://chat.buzz.io", None])
async def test_allowed_origins_are_upgraded(make_gateway: MakeGateway, tokens: dict[int, str],
                                            origin: str | None) -> None:
    gateway = await make_gateway(allowed_origins=ORIGINS)
    async with client_factory(gateway.port) as connect:
        client = await connect(origin=origin)  # None: no Origin header at all
        assert client.ws.response is not None and client.ws.response.status_code == 101
        assert (await client.auth(tokens[JOHN]))["user_id"] == JOHN


@pytest.mark.parametrize("origin", ["https://evil.com", "http://a.example.com",
                                    "https://a.example.com.evil.com", "https://buzz.io",
                                    "https://chat.buzz.io.evil.com"])
async def test_other_origins_get_403(make_gateway: MakeGateway, origin: str) -> None:
    gateway = await make_gateway(allowed_origins=ORIGINS)
    async with client_factory(gateway.port) as connect:
        with pytest.raises(InvalidStatus) as refused:
            await connect(origin=origin)
        assert refused.value.response.status_code == 403


# --- connection limit -------------------------------------------------------------------------


async def test_max_connections_gives_503(make_gateway: MakeGateway,
                                         tokens: dict[int, str]) -> None:
    gateway = await make_gateway(max_connections=2)
    async with client_factory(gateway.port) as connect:
        first = await connect(tokens[JOHN])
        await connect()  # unauthenticated connections count too
        with pytest.raises(InvalidStatus) as refused:
            await connect()
        assert refused.value.response.status_code == 503
        await first.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref=1)
        assert (await first.expect("ack"))["ref"] == 1


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_on_the_internal_port(gateway: Gateway, connect: Connect,
                                            tokens: dict[int, str]) -> None:
    john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
    await john.send("send_message", {"chat_id": GENERAL, "text": "count me"}, ref="m")
    assert {(await john.recv())["event"] for _ in range(2)} == {"new_message", "ack"}
    await jane.expect("new_message")

    status, body, headers = await http_get(
        f"http://127.0.0.1:{gateway.internal.port}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "# TYPE gogate_connections gauge" in text
    assert metric_value(text, "gogate_connections") == 2
    assert metric_value(text, "gogate_events_in_total", event="send_message") == 1
    assert metric_value(text, "gogate_events_in_total", event="auth") == 2
    for endpoint, outcome in (("validate", "200"), ("members", "200"),
                              ("send_message", "201")):
        assert metric_value(text, "gogate_backend_calls_total", endpoint=endpoint,
                            outcome=outcome) >= 1, endpoint
    assert "# TYPE gogate_backend_call_seconds histogram" in text
    assert metric_value(text, "gogate_backend_call_seconds_count", endpoint="send_message") == 1
    assert metric_value(text, "gogate_backend_call_seconds_bucket", endpoint="send_message",
                        le="+Inf") == 1


async def test_metrics_are_not_on_the_public_port(gateway: Gateway) -> None:
    assert "gogate_connections" in await metrics_text(gateway)  # served internally...
    status, body, _ = await http_get(public(gateway, "/metrics"))
    assert status == 404  # ...and not publicly
    assert b"gogate_" not in body
