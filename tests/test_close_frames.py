"""The client's close frame: a code that no endpoint may send fails the connection with 1002;
a valid code, or none at all, is answered 1000. Sent raw, as a broken client would."""

from __future__ import annotations

import pytest
from rawws import CLOSE, RawClient, frame

from gogate.server import Gateway


@pytest.mark.parametrize(("payload", "answer"), [
    pytest.param(b"\x00\x00", 1002, id="code-0"),
    pytest.param((1006).to_bytes(2, "big"), 1002, id="code-1006"),
    pytest.param((1000).to_bytes(2, "big") + b"bye", 1000, id="code-1000"),
    pytest.param((4000).to_bytes(2, "big"), 1000, id="code-4000"),
    pytest.param(b"", 1000, id="no-code"),
])
async def test_close_codes_of_the_client(gateway: Gateway, payload: bytes, answer: int) -> None:
    client = await RawClient.open(gateway.port)
    try:
        client.send(frame(CLOSE, payload))
        assert await client.close_code() == answer
    finally:
        client.writer.close()
