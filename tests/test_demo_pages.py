"""The demo page under ``/demo``: served by ``python -m gogate --dev`` only, never a file outside
its own, and its data (users, tokens, chats, messages) as the development backend holds it.

The page itself runs in Chromium in ``clients/js/test/demo.test.ts``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import (
    CAROL_DAVE,
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    Client,
    StartProcess,
    client_factory,
    gateway_settings,
    http_get,
)

from bench.procs import free_port
from gogate.devbackend import DevBackend
from gogate.devbackend.demo_pages import DemoPages
from gogate.hub import LocalBroker
from gogate.server import Gateway


async def raw_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A GET of ``path`` exactly as written (no client normalises ``..`` or escapes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:]
                                                    if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 5)
    writer.close()
    return int(lines[0].split()[1]), headers, body


async def acked(client: Client, ref: int) -> dict[str, Any]:
    """The ``ack`` of request ``ref``, past the events delivered before it."""
    while True:
        frame = await client.recv()
        if frame["event"] in ("ack", "error") and frame.get("ref") == ref:
            assert frame["event"] == "ack", frame
            return frame


@pytest.fixture
async def demo(backend: DevBackend) -> AsyncIterator[Gateway]:
    """A gateway serving the demo pages over the development backend, as ``--dev`` wires it."""
    pages = DemoPages(backend.store)
    gateway = Gateway(gateway_settings(backend.url), LocalBroker(), pages=pages)
    await gateway.start()
    yield gateway
    await gateway.stop()
    pages.close()


async def get_json(gateway: Gateway, path: str) -> tuple[int, object]:
    status, body, headers = await http_get(f"http://127.0.0.1:{gateway.port}{path}")
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


# --- only in development mode ---------------------------------------------------------------

async def test_demo_is_404_without_dev(gateway_process: StartProcess) -> None:
    proc = gateway_process(env={"BACKEND_API_URL": f"http://127.0.0.1:{free_port()}"})
    for path in ("/demo", "/demo/", "/demo/index.html", "/demo/demo.js", "/demo/api/users",
                 f"/demo/api/users/{JOHN}/token"):
        status, _, body = await raw_get(proc.port, path)
        assert status == 404, (path, body)
        assert b"token" not in body


async def test_dev_mode_serves_the_page_and_its_bundle(gateway_process: StartProcess) -> None:
    proc = gateway_process(env={"BACKEND_API_URL": f"http://127.0.0.1:{free_port()}"},
                           args=["--dev"])
    for _ in range(100):  # the banner follows the first /ready
        if f"http://127.0.0.1:{proc.port}/demo" in proc.output():
            break
        await asyncio.sleep(0.05)
    assert f"http://127.0.0.1:{proc.port}/demo" in proc.output()
    for path in ("/demo", "/demo/"):
        status, headers, body = await raw_get(proc.port, path)
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert "connect-src 'self'" in headers["content-security-policy"]
        assert b'src="/demo/demo.js"' in body
    status, headers, body = await raw_get(proc.port, "/demo/demo.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"GogateClient" in body
    status, _, body = await raw_get(proc.port, "/demo/api/users")
    assert status == 200
    assert [user["name"] for user in json.loads(body)] == [
        "John Doe", "Jane Smith", "Carol White", "Dave Black"]


# --- nothing but its own files --------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/demo/../pyproject.toml", "/demo/../../etc/passwd", "/demo/..%2fdemo_pages.py",
    "/demo/%2e%2e/demo_pages.py", "/demo/%2E%2E%2F__init__.py", "/demo/demo_pages.py",
    "/demo/__init__.py", "/demo/static/index.html", "/demo//etc/passwd", "/demo/./index.html",
    "/demo/index.html/..", "/demo/index.html%00.js", "/demo/.", "/demo/..", "/demo/%2e",
    "/demo/api/../../pyproject.toml", "/demo/api/users/1/../../../demo_pages.py",
    "/demo/api/users/-1/token", "/demo/api/users/1/chats/1/messages/..", "/demo\\..\\x",
])
async def test_no_path_reaches_another_file(demo: Gateway, path: str) -> None:
    status, _, body = await raw_get(demo.port, path)
    assert status == 404, (path, body[:200])
    assert b"import" not in body and b"root:" not in body


async def test_paths_outside_demo_are_left_to_the_gateway(demo: Gateway) -> None:
    assert (await raw_get(demo.port, "/demox"))[0] == 404
    assert (await raw_get(demo.port, "/index.html"))[0] == 404
    status, _, body = await raw_get(demo.port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


# --- what the page reads ----------------------------------------------------------------------

async def test_a_demo_token_authenticates_at_the_gateway(demo: Gateway) -> None:
    status, body = await get_json(demo, f"/demo/api/users/{JANE}/token")
    assert status == 200 and isinstance(body, dict)
    async with client_factory(demo.port) as connect:
        client = await connect()
        assert (await client.auth(body["token"]))["user_id"] == JANE


async def test_unknown_users_get_no_token(demo: Gateway) -> None:
    for user in (0, 99, 123456789):
        status, body = await get_json(demo, f"/demo/api/users/{user}/token")
        assert status == 404 and body == {"error": "no such demo user"}


async def test_chats_of_a_user_with_their_members(demo: Gateway) -> None:
    status, chats = await get_json(demo, f"/demo/api/users/{DAVE}/chats")
    assert status == 200
    assert chats == [{"id": CAROL_DAVE, "name": "Carol & Dave", "members": [
        {"id": 3, "name": "Carol White"}, {"id": DAVE, "name": "Dave Black"}]}]


async def test_messages_with_reactions_and_readers(demo: Gateway, backend: DevBackend) -> None:
    tokens = backend.tokens()
    async with client_factory(demo.port) as connect:
        john, jane = await connect(tokens[JOHN]), await connect(tokens[JANE])
        await john.send("send_message", {"chat_id": GENERAL, "text": "Hello <b>Jane</b>"}, 1)
        message_id = (await acked(john, 1))["data"]["message_id"]
        await jane.send("add_reaction", {"message_id": message_id, "emoji": "👍",
                                         "chat_id": GENERAL}, 2)
        await acked(jane, 2)
        await jane.send("mark_read", {"message_ids": [message_id], "chat_id": GENERAL}, 3)
        await acked(jane, 3)
    status, messages = await get_json(demo, f"/demo/api/users/{JANE}/chats/{GENERAL}/messages")
    assert status == 200 and isinstance(messages, list)
    assert messages[-1] == {
        "id": message_id, "chat_id": GENERAL, "user": {"id": JOHN, "full_name": "John Doe"},
        "text": "Hello <b>Jane</b>", "created_at": messages[-1]["created_at"],
        "reactions": [{"user_id": JANE, "name": "Jane Smith", "emoji": "👍"}],
        "read_by": [{"user_id": JANE, "name": "Jane Smith"}]}


async def test_only_members_read_a_chat(demo: Gateway) -> None:
    status, body = await get_json(demo, f"/demo/api/users/{DAVE}/chats/{GENERAL}/messages")
    assert status == 403 and body == {"error": "not a member of this chat"}


async def test_the_latest_fifty_messages_oldest_first(demo: Gateway, backend: DevBackend
                                                      ) -> None:
    for n in range(60):
        backend.store.create_message(GENERAL, JOHN, f"message {n}")
    status, messages = await get_json(demo, f"/demo/api/users/{JOHN}/chats/{GENERAL}/messages")
    assert status == 200 and isinstance(messages, list)
    assert [m["text"] for m in messages] == [f"message {n}" for n in range(10, 60)]
