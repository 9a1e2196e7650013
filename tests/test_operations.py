"""Operations, with the gateway as a process: ``/ready`` and ``SHUTDOWN_DELAY`` on SIGTERM and
SIGINT (alone and with workers), the client address behind proxies (the PROXY protocol over a
raw socket, ``X-Forwarded-For`` from trusted and untrusted peers, seen in the per-connection
DEBUG line), development mode on a machine whose usual ports are taken, and the warning when
the compiled hot path cannot be loaded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GENERAL, JOHN, KEY, ROOT, StartProcess, client_factory, http_get

from bench.procs import GatewayProcess, free_port
from gogate.devbackend import DevBackend
from gogate.proxy import V2_SIGNATURE

# --- readiness and the drain ----------------------------------------------------------------


async def status_of(port: int, path: str) -> tuple[int, bytes]:
    status, body, _ = await http_get(f"http://127.0.0.1:{port}{path}")
    return status, body


async def wait_for_status(port: int, path: str, expected: int, within: float) -> float:
    """Seconds until ``path`` answers ``expected``; fails after ``within``."""
    start = time.monotonic()
    while True:
        if (await status_of(port, path))[0] == expected:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"{path} did not answer {expected}"
        await asyncio.sleep(0.02)


async def exit_code(proc: GatewayProcess, within: float) -> int:
    deadline = time.monotonic() + within
    while proc.proc.poll() is None:
        assert time.monotonic() < deadline, f"still running after {within} s:\n{proc.output()}"
        await asyncio.sleep(0.05)
    return proc.proc.returncode


async def test_health_names_version_and_implementation(backend: DevBackend,
                                                       gateway_process: StartProcess) -> None:
    from gogate import __version__
    from gogate_fast import IMPLEMENTATION

    proc = gateway_process(env={"BACKEND_API_URL": backend.url})
    assert await status_of(proc.port, "/ready") == (200, b"ready\n")
    status, body = await status_of(proc.port, "/health")
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "ok" and health["service"] == "gogate"
    assert health["version"] == __version__ and health["implementation"] == IMPLEMENTATION
    proc.signal(signal.SIGTERM)
    assert await exit_code(proc, 5) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_shutdown_delay_keeps_serving_with_ready_503(
        backend: DevBackend, gateway_process: StartProcess, sig: int) -> None:
    delay, timeout = 1.5, 2.0
    proc = gateway_process(env={"BACKEND_API_URL": backend.url, "SHUTDOWN_DELAY": str(delay),
                                "SHUTDOWN_TIMEOUT": str(timeout)})
    token = backend.tokens()[JOHN]
    async with client_factory(proc.port) as connect:
        before = await connect(token)
        assert (await status_of(proc.port, "/ready"))[0] == 200
        signalled = time.monotonic()
        proc.signal(sig)
        # /ready goes down at once; /health says so, and still answers.
        assert await wait_for_status(proc.port, "/ready", 503, within=0.5) < 0.5
        status, body = await status_of(proc.port, "/health")
        assert status == 200 and json.loads(body)["status"] == "draining"
        # A load balancer that has not noticed yet still gets served, new connections too.
        during = await connect(token)
        await during.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref=1)
        assert (await during.expect("ack"))["ref"] == 1
        await before.send("typing", {"chat_id": GENERAL, "is_typing": False}, ref=2)
        frame = await before.recv()
        while frame["event"] != "ack":  # its own typing is not echoed; skip anything else
            frame = await before.recv()
        assert frame["ref"] == 2
        assert time.monotonic() - signalled < delay, "the checks took longer than the delay"
        # Then the drain: every connection is closed 1001, and the process exits 0.
        assert await before.closed(timeout=delay + timeout) == 1001
        assert await during.closed(timeout=1.0) == 1001
        assert time.monotonic() - signalled >= delay - 0.1
        assert await exit_code(proc, timeout + 1.0) == 0
    assert time.monotonic() - signalled < delay + timeout + 1.0


async def test_workers_all_answer_503_at_once(backend: DevBackend,
                                              gateway_process: StartProcess) -> None:
    delay = 2.0
    proc = gateway_process(env={"BACKEND_API_URL": backend.url, "WORKERS": "2",
                                "SHUTDOWN_DELAY": str(delay), "SHUTDOWN_TIMEOUT": "2"})
    workers: set[int] = set()
    deadline = time.monotonic() + 15
    while len(workers) < 2:  # both workers listen
        assert time.monotonic() < deadline, workers
        status, body = await status_of(proc.port, "/health")
        if status == 200:
            workers.add(json.loads(body)["pid"])
    proc.signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    answers = [await status_of(proc.port, "/ready") for _ in range(20)]
    assert {status for status, _ in answers} == {503}, answers
    pids = {json.loads((await status_of(proc.port, "/health"))[1])["pid"] for _ in range(20)}
    assert pids == workers, "a worker stopped serving during the delay"
    assert await exit_code(proc, delay + 2 + 2.0) == 0


# --- the client's address behind proxies ----------------------------------------------------


def upgrade_request(extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: gogate\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def raw_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send ``data`` on a new connection; what the gateway answers until it stops talking
    (b"" when it closes without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return answer


def v2_header(source: str, port: int) -> bytes:
    address = ipaddress.ip_address(source)
    if address.version == 4:
        body = address.packed + bytes(4) + struct.pack("!HH", port, 443)
        return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    body = address.packed + bytes(16) + struct.pack("!HH", port, 443)
    return V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


def connected_remotes(proc: GatewayProcess, count: int, within: float = 5.0) -> list[str]:
    """The ``remote`` of the first ``count`` "connected" DEBUG lines of the JSON log."""
    deadline = time.monotonic() + within
    while True:
        remotes = []
        for line in proc.output().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == "connected":
                    remotes.append(entry["remote"])
        if len(remotes) >= count or time.monotonic() > deadline:
            return remotes
        time.sleep(0.05)


@pytest.fixture
def debug_gateway(backend: DevBackend, gateway_process: StartProcess) -> Any:
    def start(**env: str) -> GatewayProcess:
        return gateway_process(env={"BACKEND_API_URL": backend.url, "LOG_LEVEL": "debug",
                                    "LOG_FORMAT": "json", **env})
    return start


def test_proxy_protocol_gives_the_client_address(debug_gateway: Any) -> None:
    proc = debug_gateway(PROXY_PROTOCOL="true")
    v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 443\r\n"
    assert raw_exchange(proc.port, v1 + upgrade_request()).startswith(b"HTTP/1.1 101")
    assert raw_exchange(proc.port, v2_header("198.51.100.9", 40002) + upgrade_request()
                        ).startswith(b"HTTP/1.1 101")
    assert raw_exchange(proc.port, v2_header("2001:db8::9", 40003) + upgrade_request()
                        ).startswith(b"HTTP/1.1 101")
    # A load balancer's own health check names no client: /ready answers it.
    local = V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])
    assert raw_exchange(proc.port, local + b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
                        ).startswith(b"HTTP/1.1 200")
    assert connected_remotes(proc, 3) == ["203.0.113.7:40001", "198.51.100.9:40002",
                                          "[2001:db8::9]:40003"]


@pytest.mark.parametrize("data", [
    upgrade_request(),  # no header at all
    b"PROXY TCP4 203.0.113.7 10.0.0.1 40001\r\n" + upgrade_request(),  # a field missing
    V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4) + upgrade_request(),  # block too short
], ids=["none", "v1-malformed", "v2-malformed"])
def test_proxy_protocol_closes_a_connection_without_a_valid_header(
        debug_gateway: Any, data: bytes) -> None:
    proc = debug_gateway(PROXY_PROTOCOL="true")
    assert raw_exchange(proc.port, data) == b""
    # the gateway goes on serving
    v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 443\r\n"
    assert raw_exchange(proc.port, v1 + upgrade_request()).startswith(b"HTTP/1.1 101")
    assert "PROXY protocol header" in proc.output()


def test_proxy_protocol_only_from_trusted_proxies(debug_gateway: Any) -> None:
    proc = debug_gateway(PROXY_PROTOCOL="true", TRUSTED_PROXIES="10.0.0.0/8")
    v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 443\r\n"
    assert raw_exchange(proc.port, v1 + upgrade_request()) == b""
    assert connected_remotes(proc, 1, within=0.5) == []


def test_forwarded_for_from_a_trusted_proxy(debug_gateway: Any) -> None:
    proc = debug_gateway(TRUSTED_PROXIES="127.0.0.0/8,10.0.0.0/8")
    # The client wrote the first hop itself; the trusted proxy 10.1.1.1 appended the second.
    forwarded = "X-Forwarded-For: 6.6.6.6, 198.51.100.4, 10.1.1.1\r\n"
    assert raw_exchange(proc.port, upgrade_request(forwarded)).startswith(b"HTTP/1.1 101")
    assert connected_remotes(proc, 1) == ["198.51.100.4"]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(debug_gateway: Any) -> None:
    proc = debug_gateway(TRUSTED_PROXIES="10.0.0.0/8")
    forwarded = "X-Forwarded-For: 198.51.100.4\r\n"
    assert raw_exchange(proc.port, upgrade_request(forwarded)).startswith(b"HTTP/1.1 101")
    [remote] = connected_remotes(proc, 1)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", remote), remote


def test_forwarded_for_without_trusted_proxies_is_ignored(debug_gateway: Any) -> None:
    proc = debug_gateway()
    assert raw_exchange(proc.port, upgrade_request("X-Forwarded-For: 198.51.100.4\r\n")
                        ).startswith(b"HTTP/1.1 101")
    [remote] = connected_remotes(proc, 1)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", remote), remote


def test_proxy_protocol_with_tls_is_refused_at_startup(tmp_path: Path) -> None:
    pem = tmp_path / "cert.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    result = subprocess.run(
        [sys.executable, "-m", "gogate", "--proxy-protocol", "true", "--tls-cert-file", str(pem),
         "--tls-key-file", str(pem), "--internal-api-key", KEY], cwd=tmp_path,
        capture_output=True, text=True, timeout=30, env=_env())
    assert result.returncode == 2
    assert "PROXY_PROTOCOL" in result.stderr and "TLS_CERT_FILE" in result.stderr


# --- development mode on a busy machine -----------------------------------------------------


def _env(**values: str) -> dict[str, str]:
    """This environment without gogate's settings, with the repository importable."""
    from gogate.config import FIELDS

    names = {f.env for f in FIELDS}
    env = {k: v for k, v in os.environ.items()
           if k not in names and not k.startswith("GOGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


@contextlib.contextmanager
def occupied(*ports: int) -> Iterator[list[int]]:
    """Listen on each port that is free; yields those this test holds (the others are held
    by another program already: taken all the same)."""
    held = []
    try:
        for port in ports:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
                sock.listen()
                held.append(sock)
            except OSError:
                sock.close()
        yield [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def run_dev(tmp_path: Path, env: dict[str, str], until: str, within: float = 30.0
            ) -> tuple[subprocess.Popen[str], str]:
    """``python -m gogate --dev``; its output once ``until`` appears in it, or once it exits."""
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gogate", "--dev"], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + within
    while until not in log.read_text() and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {until!r} in time:\n{log.read_text()}")
        time.sleep(0.05)
    return proc, log.read_text()


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()


def free_pair() -> int:
    """A free port whose successor is free too, below the range the system gives outgoing
    connections (a busy machine holds many of those)."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            for candidate in (port, port + 1):
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("0.0.0.0", candidate))
        except OSError:
            continue
        return port
    pytest.skip("no two free ports in a row on this machine")


def test_dev_mode_starts_when_the_usual_ports_are_taken(tmp_path: Path) -> None:
    port = free_pair()
    temp = tmp_path / "tmp"
    temp.mkdir()
    with occupied(8000, 8081, port + 1) as held:
        if port + 1 not in held:
            pytest.skip(f"port {port + 1} is in use on this machine: cannot occupy it")
        proc, output = run_dev(tmp_path, _env(PORT=str(port), HOST="127.0.0.1",
                                              TMPDIR=str(temp)), until="Demo users")
        try:
            assert proc.poll() is None, output
            banner = output[output.index("gogate development mode"):]
            gateway = re.search(r"gateway:\s+ws://127\.0\.0\.1:(\d+)/ws", banner)
            metrics = re.search(r"metrics:\s+http://127\.0\.0\.1:(\d+)/metrics", banner)
            backend = re.search(r"dev backend:\s+http://127\.0\.0\.1:(\d+)", banner)
            assert gateway and metrics and backend, banner
            assert int(gateway[1]) == port
            assert int(metrics[1]) not in (8081, port + 1) and int(backend[1]) != 8000
            # the banner came after the binds: what it names answers
            with socket.create_connection(("127.0.0.1", int(metrics[1])), timeout=2):
                pass
            with socket.create_connection(("127.0.0.1", int(backend[1])), timeout=2):
                pass
            assert "gogate listening" in output[:output.index("gogate development mode")]
        finally:
            assert stop(proc) == 0
    assert list(temp.iterdir()) == [], "the development backend left files behind"


def test_dev_mode_internal_port_follows_port(tmp_path: Path) -> None:
    port = free_pair()
    with occupied(8081):
        proc, output = run_dev(tmp_path, _env(PORT=str(port), HOST="127.0.0.1"),
                               until="Demo users")
        try:
            assert f"http://127.0.0.1:{port + 1}/metrics" in output, output
        finally:
            stop(proc)


@pytest.mark.parametrize("variable", ["PORT", "INTERNAL_PORT", "BACKEND_API_URL"])
def test_dev_mode_taken_port_fails_cleanly(tmp_path: Path, variable: str) -> None:
    taken = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = _env(PORT=str(free_port()), HOST="127.0.0.1", TMPDIR=str(temp))
    env[variable] = f"http://127.0.0.1:{taken}" if variable == "BACKEND_API_URL" else str(taken)
    with occupied(taken):
        proc, output = run_dev(tmp_path, env, until="\0")
        assert proc.wait(15) == 1, output
    assert "Demo users" not in output and "eyJ" not in output, output  # no banner, no token
    problems = [line for line in output.splitlines() if str(taken) in line]
    assert problems and all("in use" in line for line in problems), output
    assert "Traceback" not in output, output
    assert list(temp.iterdir()) == [], "a failed start left files behind"


# --- the hot path's implementation ----------------------------------------------------------


@pytest.mark.parametrize("asked", [False, True], ids=["missing", "GOGATE_NO_EXTENSIONS"])
def test_pure_hot_path_is_a_warning_unless_asked_for(backend: DevBackend, tmp_path: Path,
                                                      asked: bool) -> None:
    # A sitecustomize that makes the compiled module impossible to import, as on a machine
    # where it was never built.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['gogate_fast._fast'] = None\n")
    port = free_port()
    env = _env(PORT=str(port), INTERNAL_PORT=str(free_port()), HOST="127.0.0.1",
               INTERNAL_API_KEY=KEY, BACKEND_API_URL=str(backend.url))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    if asked:
        env["GOGATE_NO_EXTENSIONS"] = "1"
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gogate"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while "gogate listening" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    lines = [line for line in log.read_text().splitlines() if "pure-Python twin" in line]
    assert len(lines) == 1, log.read_text()
    if asked:
        assert " INFO " in lines[0] and "GOGATE_NO_EXTENSIONS" in lines[0]
    else:
        assert " WARNING " in lines[0] and "could not be loaded" in lines[0]
