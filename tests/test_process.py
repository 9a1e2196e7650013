"""``python -m gogate`` as a process (docs/protocol.md): where settings come from, JSON
logs that keep secrets out, and development mode end to end.

Some tests run the process from a temporary working directory (to hold a ``.env``) with the
repository on ``PYTHONPATH``; their stdout and stderr are kept apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DAVE,
    GENERAL,
    JANE,
    JOHN,
    KEY,
    ROOT,
    StartProcess,
    client_factory,
    free_port,
)

from gogate.config import FIELDS
from gogate.devbackend import DevBackend

SETTING_VARS = {field.env for field in FIELDS}


class Proc:
    """``python -m gogate`` run from ``cwd``, stdout and stderr captured apart."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.stdout_path = cwd / "stdout.log"
        self.stderr_path = cwd / "stderr.log"
        self._out = self.stdout_path.open("wb")
        self._err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gogate", *args], cwd=cwd, env=env,
                                     stdout=self._out, stderr=self._err)

    def stdout(self) -> str:
        self._out.flush()
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_listening(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited early:\n{self.stderr()}")
            if listening(port):
                return
            time.sleep(0.05)
        raise AssertionError(f"gateway did not listen on {port}:\n{self.stderr()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()
        self._err.close()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def clean_env(**values: str) -> dict[str, str]:
    """The inherited environment without any gogate setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items()
           if k not in SETTING_VARS and not k.startswith("GOGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[Proc] = []

    def start(args: list[str] | None = None, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args or [], env or clean_env(), tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def http_json(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def write_env_file(path: Path, **values: str) -> Path:
    path.write_text("# settings for the test\n"
                    + "".join(f"{key}={value}\n" for key, value in values.items()))
    return path


# --- where settings come from ---------------------------------------------------------------


def test_dotenv_in_working_directory_sets_ports(launch: Any, tmp_path: Path) -> None:
    port, internal = free_port(), free_port()
    write_env_file(tmp_path / ".env", PORT=str(port), INTERNAL_PORT=str(internal),
                   HOST="127.0.0.1", INTERNAL_API_KEY=KEY)
    proc = launch(env=clean_env())
    proc.wait_listening(port)
    status, body = http_json(f"http://127.0.0.1:{port}/health")
    assert status == 200 and body["status"] == "ok" and body["service"] == "gogate"
    with urllib.request.urlopen(f"http://127.0.0.1:{internal}/metrics", timeout=5) as response:
        assert response.status == 200
        assert b"gogate_connections" in response.read()


def test_env_file_flag_sets_ports(launch: Any, tmp_path: Path) -> None:
    port, internal = free_port(), free_port()
    env_file = write_env_file(tmp_path / "gateway.env", PORT=str(port),
                              INTERNAL_PORT=str(internal), HOST="127.0.0.1",
                              INTERNAL_API_KEY=KEY)
    proc = launch(["--env-file", str(env_file)], clean_env())
    proc.wait_listening(port)
    assert http_json(f"http://127.0.0.1:{port}/health")[0] == 200
    assert listening(internal)


def test_environment_wins_over_the_file(launch: Any, tmp_path: Path) -> None:
    from_file, from_env = free_port(), free_port()
    env_file = write_env_file(tmp_path / "gateway.env", PORT=str(from_file),
                              INTERNAL_PORT=str(free_port()), HOST="127.0.0.1",
                              INTERNAL_API_KEY=KEY)
    proc = launch(["--env-file", str(env_file)], clean_env(PORT=str(from_env)))
    proc.wait_listening(from_env)
    assert http_json(f"http://127.0.0.1:{from_env}/health")[0] == 200
    assert not listening(from_file)


def test_flag_wins_over_environment_and_file(launch: Any, tmp_path: Path) -> None:
    from_file, from_env, from_flag = free_port(), free_port(), free_port()
    env_file = write_env_file(tmp_path / "gateway.env", PORT=str(from_file),
                              INTERNAL_PORT=str(free_port()), HOST="127.0.0.1",
                              INTERNAL_API_KEY=KEY)
    proc = launch(["--env-file", str(env_file), "--port", str(from_flag)],
                  clean_env(PORT=str(from_env)))
    proc.wait_listening(from_flag)
    assert http_json(f"http://127.0.0.1:{from_flag}/health")[0] == 200
    assert not listening(from_file) and not listening(from_env)


def test_bad_value_in_the_file_stops_startup(launch: Any, tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / "gateway.env", PORT="abc", INTERNAL_API_KEY=KEY)
    proc = launch(["--env-file", str(env_file)], clean_env())
    assert proc.proc.wait(15) == 2
    lines = proc.stderr().strip().splitlines()
    assert len(lines) == 1 and "PORT" in lines[0] and "abc" in lines[0], lines


# --- JSON logs ------------------------------------------------------------------------------


async def test_json_logs_carry_context_and_no_secrets(launch: Any, backend: DevBackend,
                                                      tokens: dict[int, str]) -> None:
    port = free_port()
    proc = launch(env=clean_env(PORT=str(port), INTERNAL_PORT=str(free_port()),
                                HOST="127.0.0.1", INTERNAL_API_KEY=KEY,
                                BACKEND_API_URL=str(backend.url), LOG_FORMAT="json",
                                LOG_LEVEL="debug"))
    await asyncio.to_thread(proc.wait_listening, port)
    bogus = "not-a-valid-token-7f3a9c"
    async with client_factory(port) as connect:
        stranger = await connect()
        await stranger.send("auth", {"token": bogus})
        await stranger.expect_error("AUTH_FAILED")
        john = await connect(tokens[JOHN])
        jane = await connect(tokens[JANE])
        await john.send("send_message", {"chat_id": GENERAL, "text": "logged?"}, ref=1)
        assert (await jane.expect("new_message"))["data"]["text"] == "logged?"
        await john.expect("new_message")
        await john.expect("ack")
    proc.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.proc.wait, 15) == 0

    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "msg"} <= record.keys(), line
        records.append(record)
    assert any(r.get("user_id") == JOHN for r in records), lines
    assert any(r.get("user_id") == JANE for r in records), lines
    for secret in [*tokens.values(), bogus, KEY]:
        assert not any(secret in line for line in lines), secret
        assert secret not in proc.stdout()


# --- development mode: the "done means" scenario ------------------------------------------

TOKEN_LINE = re.compile(r"^\s*user (\d+) ([^:]*): (\S+)\s*$", re.MULTILINE)


def dev_tokens(output: str) -> dict[int, str]:
    return {int(uid): token for uid, _, token in TOKEN_LINE.findall(output)}


def banner(proc: Any, within: float = 10.0) -> str:
    """The output once the banner is complete: it comes when the gateway answers /ready,
    a moment after the port first accepts."""
    deadline = time.monotonic() + within
    while '"event":"send_message"' not in (output := proc.output()):  # its last line
        assert time.monotonic() < deadline, f"no banner:\n{output}"
        time.sleep(0.05)
    return output


async def test_dev_mode_banner(gateway_process: StartProcess) -> None:
    proc = gateway_process(env={"BACKEND_API_URL": f"http://127.0.0.1:{free_port()}"},
                           args=["--dev"])
    output = banner(proc)
    names = {int(uid): name.strip() for uid, name, _ in TOKEN_LINE.findall(output)}
    assert set(names) >= {1, 2, 3, 4}, output
    assert names[JOHN].startswith("John") and names[JANE].startswith("Jane"), names
    ws_url = f"ws://127.0.0.1:{proc.port}/ws"
    command = next((line.strip() for line in output.splitlines()
                    if "websockets" in line and ws_url in line), None)
    assert command is not None, output
    auth_line = next(line.strip() for line in output.splitlines()
                     if line.strip().startswith('{"event":"auth"'))
    assert json.loads(auth_line) == {"event": "auth", "data": {"token": dev_tokens(output)[1]}}

    # The printed command works as printed, from the repository root.
    client = await asyncio.create_subprocess_shell(
        command, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(auth_line.encode() + b"\n")
        await client.stdin.drain()
        seen = b""
        deadline = time.monotonic() + 10
        while b"auth_success" not in seen:
            assert time.monotonic() < deadline, seen
            seen += await asyncio.wait_for(client.stdout.read(4096), 10)
    finally:
        if client.returncode is None:
            client.kill()
        await client.wait()


async def test_dev_mode_john_and_jane_chat_dave_sees_nothing(
        gateway_process: StartProcess) -> None:
    proc = gateway_process(env={"BACKEND_API_URL": f"http://127.0.0.1:{free_port()}"},
                           args=["--dev"])
    tokens = dev_tokens(banner(proc))
    async with client_factory(proc.port) as connect:
        john = await connect()
        assert (await john.auth(tokens[JOHN]))["name"].startswith("John")
        jane = await connect()
        assert (await jane.auth(tokens[JANE]))["name"].startswith("Jane")
        dave = await connect(tokens[DAVE])

        # John writes; both see it, John gets the ack.
        await john.send("send_message", {"chat_id": GENERAL, "text": "Hi Jane!"}, ref=1)
        hello = await jane.expect("new_message")
        assert hello["data"]["text"] == "Hi Jane!" and hello["data"]["user"]["id"] == JOHN
        assert (await john.expect("new_message"))["data"]["id"] == hello["data"]["id"]
        assert (await john.expect("ack"))["data"] == {"message_id": hello["data"]["id"]}

        # Jane types; John sees it, Jane does not get her own.
        await jane.send("typing", {"chat_id": GENERAL, "is_typing": True})
        typing = await john.expect("user_typing")
        assert typing["data"] == {"chat_id": GENERAL, "user_id": JANE,
                                  "name": typing["data"]["name"], "is_typing": True}
        assert typing["data"]["name"].startswith("Jane")

        # Jane answers.
        await jane.send("send_message", {"chat_id": GENERAL, "text": "Hello back!"}, ref=2)
        answer = await john.expect("new_message")
        assert answer["data"]["text"] == "Hello back!"
        assert (await jane.expect("new_message"))["data"]["id"] == answer["data"]["id"]
        assert (await jane.expect("ack"))["ref"] == 2

        # Jane reacts to John's message; both see the reaction.
        await jane.send("add_reaction", {"message_id": hello["data"]["id"], "emoji": "👍",
                                         "chat_id": GENERAL}, ref=3)
        for client in (john, jane):
            reaction = await client.expect("new_reaction")
            assert reaction["data"] == {"message_id": hello["data"]["id"], "user_id": JANE,
                                        "name": reaction["data"]["name"], "emoji": "👍",
                                        "chat_id": GENERAL}
        assert (await jane.expect("ack"))["ref"] == 3

        # John marks Jane's answer read; both see the receipt.
        await john.send("mark_read", {"message_ids": [answer["data"]["id"]],
                                      "chat_id": GENERAL}, ref=4)
        for client in (john, jane):
            receipt = await client.expect("message_read")
            assert receipt["data"]["message_ids"] == [answer["data"]["id"]]
            assert receipt["data"]["user_id"] == JOHN
            assert receipt["data"]["chat_id"] == GENERAL
        assert (await john.expect("ack"))["ref"] == 4

        # Dave was connected all along and got nothing.
        await dave.silent(0.5)
        await john.silent(0.1)
        await jane.silent(0.1)
        await dave.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="d")
        assert (await dave.expect_error("NOT_A_MEMBER"))["ref"] == "d"
        await john.silent(0.2)
