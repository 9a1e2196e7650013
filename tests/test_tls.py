"""TLS: with ``TLS_CERT_FILE`` and ``TLS_KEY_FILE`` the public port serves wss:// and https://."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import websockets

from tests.conftest import JOHN, MakeGateway


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def client_context(cert: str) -> ssl.SSLContext:
    """A client that trusts only the test certificate, and checks the host name."""
    return ssl.create_default_context(cafile=cert)


async def test_wss_and_https_with_the_configured_certificate(
        make_gateway: MakeGateway, certificate: tuple[str, str],
        tokens: dict[int, str]) -> None:
    cert, key = certificate
    gateway = await make_gateway(tls_cert_file=cert, tls_key_file=key)
    context = client_context(cert)
    async with aiohttp.ClientSession() as session, session.get(
            f"https://127.0.0.1:{gateway.port}/health", ssl=context) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"
    async with websockets.connect(f"wss://127.0.0.1:{gateway.port}/ws", ssl=context) as ws:
        await ws.send(json.dumps({"event": "auth", "data": {"token": tokens[JOHN]}}))
        answer = json.loads(await ws.recv())
        assert answer["event"] == "auth_success"
        assert answer["data"]["user_id"] == JOHN


async def test_plain_websocket_is_refused_on_a_tls_port(
        make_gateway: MakeGateway, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    gateway = await make_gateway(tls_cert_file=cert, tls_key_file=key)
    with pytest.raises((websockets.InvalidHandshake, OSError, TimeoutError)):
        async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/ws", open_timeout=3):
            pass
