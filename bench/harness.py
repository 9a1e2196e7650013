"""What every load scenario shares: the benchmark client, setup through the development
backend, CPU meters, the systems under test (gogate, its pure-Python twin, the reference hub,
and any baseline command), and the result table.

A baseline is ``NAME=CMD`` or ``NAME=legacy:CMD``. ``CMD`` is split like a shell command line
and run pinned to the gateway's CPU with the gateway's environment: ``HOST``, ``PORT``,
``INTERNAL_PORT``, ``BACKEND_API_URL``, ``INTERNAL_API_KEY``, ``LOG_LEVEL=warning``,
``RATE_LIMIT=0``, ``MAX_CONNECTIONS_PER_USER=0``, ``ALLOWED_ORIGINS=*`` and the scenario's own
settings. The placeholders ``{port}``, ``{internal_port}``, ``{backend}`` and ``{key}`` in
``CMD`` are replaced by the same values, for commands that take flags. ``legacy:`` points the
baseline at a second development backend started with ``--legacy-shapes`` (member lists with
``user_id`` and ``name``, camelCase message bodies), for the original Go gateway. A baseline's
frames may carry several events joined by newlines (the original batches its queue): they are
counted one event per line.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.procs import (
    KEY,
    Service,
    bench_settings,
    child_env,
    launch_gateway,
    start_gateway,
    start_refhub,
)

__all__ = [
    "GATEWAY_CPU",
    "LOADGEN_CPU",
    "Backend",
    "Baseline",
    "Client",
    "Meter",
    "Row",
    "System",
    "close_clients",
    "make_system",
    "median_row",
    "open_clients",
    "parse_baseline",
    "percentile",
    "print_table",
]

GATEWAY_CPU, LOADGEN_CPU = 0, 1
_ACK = b'{"event":"ack"'
AUTH_OK = b'{"event":"auth_success"'


class Client(WSListener):
    """One benchmark connection. Before ``ready`` it hands the first frame to ``waiter``;
    afterwards it counts deliveries, and optionally records their latency or acks."""

    __slots__ = ("acks", "joined", "latencies", "on_ack", "own", "received", "track",
                 "transport", "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.received = 0
        self.acks = 0
        self.track = False
        self.joined = False  # frames may carry several newline-separated events
        self.latencies: list[int] = []
        self.on_ack: Callable[[], None] | None = None
        self.own: bytes | None = None  # marker of this sender's messages, when nothing acks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(frame.get_payload_as_bytes())
            return
        if self.on_ack is None and not self.track and not self.joined:
            self.received += 1
            return
        payload = frame.get_payload_as_bytes()
        if self.on_ack is not None:
            if payload.startswith(_ACK):
                self.own = None  # this server acks: its own copies are plain deliveries
                self.acks += 1
                self.on_ack()
                return
            if self.own is not None:
                for _ in range(payload.count(self.own)):
                    self.acks += 1  # and it is a delivery too
                    self.on_ack()
        self.received += payload.count(b"\n") + 1 if self.joined else 1
        if self.track:
            now = time.monotonic_ns()
            start = payload.find(b"t=")
            while start >= 0:
                end = start + 2
                while end < len(payload) and 48 <= payload[end] <= 57:
                    end += 1
                if end > start + 2:
                    self.latencies.append(now - int(payload[start + 2:end]))
                start = payload.find(b"t=", end) if self.joined else -1

    def send(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, text)

    def next_frame(self) -> asyncio.Future[bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter


# --- setup through the development backend --------------------------------------------------


class Backend:
    """A development backend process and the calls that set up a scenario through it."""

    def __init__(self, service: Service, legacy: bool = False) -> None:
        self.url = f"http://127.0.0.1:{service.port}"
        self.service = service
        self.legacy = legacy
        self.http = aiohttp.ClientSession()
        #: The PEM file of the key that verifies this backend's tokens, once fetched.
        self.public_key: Path | None = None

    async def fetch_public_key(self) -> Path | None:
        """Save the backend's token-verifying public key (``GET /api/dev/public-key``) as a
        PEM file; None when this backend publishes none."""
        async with self.http.get(self.url + "/api/dev/public-key") as response:
            pem = await response.read() if response.status == 200 else b""
        if b"-----BEGIN " in pem:
            handle, path = tempfile.mkstemp(prefix="gogate-bench-", suffix=".pem")
            os.write(handle, pem)
            os.close(handle)
            self.public_key = Path(path)
        return self.public_key

    async def get(self, path: str) -> Any:
        async with self.http.get(self.url + path) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def post(self, path: str, body: Any) -> Any:
        async with self.http.post(self.url + path, json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def users(self, count: int) -> list[tuple[int, str]]:
        ids = (await self.post("/api/dev/users/bulk", {"count": count, "prefix": "load"}))["ids"]
        tokens = (await self.post("/api/dev/tokens/bulk", {"user_ids": ids, "ttl": 86400}))
        return [(uid, tokens["tokens"][str(uid)]) for uid in ids]

    async def chat(self, member_ids: list[int]) -> int:
        return int((await self.post("/api/dev/chats", {"name": "bench",
                                                        "member_ids": member_ids}))["id"])

    async def calls(self) -> dict[str, int]:
        calls: dict[str, int] = (await self.get("/api/dev/stats"))["calls"]
        return calls

    async def reset_calls(self) -> None:
        async with self.http.delete(self.url + "/api/dev/stats"):
            pass

    async def close(self) -> None:
        await self.http.close()
        self.service.stop()
        if self.public_key is not None:
            self.public_key.unlink(missing_ok=True)


# --- connecting -----------------------------------------------------------------------------


def _local_addr(index: int) -> tuple[str, int] | None:
    """Spread connections over 127.0.0.x source addresses beyond 20,000 of them."""
    return None if index < 20000 else (f"127.0.0.{2 + index // 20000}", 0)


async def connect_one(url: str, token: str | None, index: int = 0, joined: bool = False
                      ) -> Client:
    """One connection, authenticated when ``token`` is given."""
    extra: dict[str, Any] = {} if (addr := _local_addr(index)) is None \
        else {"local_addr": addr}
    _, listener = await ws_connect(Client, url, **extra)
    client = cast(Client, listener)
    assert client.transport is not None
    client.joined = joined
    if token is not None:
        answer = client.next_frame()
        client.send(b'{"event":"auth","data":{"token":"%s"}}' % token.encode())
        try:
            reply = await asyncio.wait_for(answer, 30)
        except BaseException:
            client.transport.disconnect()
            raise
        if not reply.startswith(AUTH_OK):
            client.transport.disconnect()
            raise RuntimeError(f"auth refused: {reply[:200]!r}")
    return client


async def open_clients(port: int, tokens: list[str | None], concurrency: int = 200,
                       joined: bool = False) -> tuple[list[Client], list[float]]:
    """Connect (and authenticate, when a token is given) ``len(tokens)`` clients; returns them
    with each one's handshake time (connect start → auth_success) in seconds."""
    url = f"ws://127.0.0.1:{port}/ws"
    clients: list[Client | None] = [None] * len(tokens)
    timings: list[float] = [0.0] * len(tokens)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, token: str | None) -> None:
        async with semaphore:
            started = time.perf_counter()
            clients[index] = await connect_one(url, token, index, joined)
            timings[index] = time.perf_counter() - started

    await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
    return [c for c in clients if c is not None], timings


def close_clients(clients: list[Client]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Meter:
    """CPU of the gateway and of this process over a window of wall time; with ``profile``
    set, py-spy samples the gateway over the same window into that file (collapsed stacks)."""

    server: Service
    profile: str | None = None
    wall: float = 0.0
    server_cpu: float = 0.0
    own_cpu: float = 0.0
    _marks: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _spy: Any = None

    @staticmethod
    def _own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        if self.profile is not None:
            # --native shows C frames (syscalls, Cython) but pauses the process per sample;
            # without it py-spy samples without stopping the gateway.
            mode = ["--native"] if os.environ.get("BENCH_PROFILE_NATIVE") == "1" \
                else ["--nonblocking"]
            self._spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.server.pid), *mode, "--rate", "250",
                 "--format", "raw", "--output", self.profile],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # py-spy attaches
        self._marks = (time.perf_counter(), self.server.cpu_seconds(), self._own())

    def stop(self) -> None:
        if self.profile is not None:
            self._spy.send_signal(signal.SIGINT)
            self._spy.wait(30)
        wall, server, own = self._marks
        self.wall = time.perf_counter() - wall
        self.server_cpu = self.server.cpu_seconds() - server
        self.own_cpu = self._own() - own


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    system: str
    values: dict[str, float] = field(default_factory=dict)


def median_row(rows: list[Row]) -> Row:
    """The median of each figure over repeated runs of one system."""
    keys = list(dict.fromkeys(k for row in rows for k in row.values))
    return Row(rows[0].system, {k: sorted(r.values.get(k, float("nan"))
                                          for r in rows)[len(rows) // 2] for k in keys})


def _comparable(value: float) -> bool:
    return value == value and value != 0  # neither NaN nor zero


def _cell(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def print_table(title: str, rows: list[Row], baselines: list[str], repeat: int = 1,
                notes: list[str] | None = None) -> None:
    """A markdown table; every figure of a row that is not a baseline also as a ratio to each
    baseline's (``0.95x go``)."""
    columns = list(dict.fromkeys(k for row in rows for k in row.values))
    print(f"\n## {title}\n")
    print("| system | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    bases = [r for name in baselines for r in rows if r.system == name]
    for row in rows:
        cells = []
        for column in columns:
            value = row.values.get(column, float("nan"))
            ratios = [f"{value / base.values[column]:.2f}x"
                      + (f" {base.system}" if len(bases) > 1 else "")
                      for base in bases if base is not row and _comparable(value)
                      and _comparable(base.values.get(column, 0.0))]
            cells.append(_cell(value) + (f" ({', '.join(ratios)})" if ratios else ""))
        print(f"| {row.system} | " + " | ".join(cells) + " |")
    if bases:
        print(f"\nratios in parentheses are against {', '.join(b.system for b in bases)}, "
              "measured in the same run"
              + (f"; medians of {repeat} interleaved runs" if repeat > 1 else ""))
    for note in notes or []:
        print(f"\n{note}")
    sys.stdout.flush()


# --- systems under test ---------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Another gateway command to measure beside gogate (see the module docstring)."""

    name: str
    command: str
    legacy: bool = False

    def argv(self, env: dict[str, str]) -> list[str]:
        values = {"{port}": env["PORT"], "{internal_port}": env["INTERNAL_PORT"],
                  "{backend}": env["BACKEND_API_URL"], "{key}": env["INTERNAL_API_KEY"]}
        words = shlex.split(self.command)
        for placeholder, value in values.items():
            words = [word.replace(placeholder, value) for word in words]
        return words


def parse_baseline(spec: str) -> Baseline:
    """``NAME=CMD`` or ``NAME=legacy:CMD``."""
    name, sep, command = spec.partition("=")
    if not sep or not name or not command.strip():
        raise ValueError(f"--baseline wants NAME=CMD, got {spec!r}")
    legacy = command.startswith("legacy:")
    return Baseline(name, command.removeprefix("legacy:"), legacy)


@dataclass
class System:
    """A server under test, the backend it talks to, and how to speak to it."""

    name: str
    server: Service
    backend: Backend
    protocol: bool  # True: the BuzzChat protocol; False: the bare hub
    joined: bool = False  # frames may carry several events (a baseline)

    def stop(self) -> None:
        self.server.stop()


def make_system(name: str, backends: dict[bool, Backend], baselines: dict[str, Baseline],
                pin: bool, gateway_env: dict[str, str]) -> System:
    """Start the system called ``name``: gogate, gogate-pure, picows-hub, picows-hub-uv or a
    baseline, each pinned to the gateway's CPU unless ``pin`` is off. ``{public_key}`` in a
    setting stands for the key file of the backend the system talks to."""
    cpu = GATEWAY_CPU if pin else None
    backend = backends[baselines[name].legacy if name in baselines else False]
    if backend.public_key is not None:  # a variant verifying tokens locally names the key
        gateway_env = {k: v.replace("{public_key}", str(backend.public_key))
                       for k, v in gateway_env.items()}
    if name in ("gogate", "gogate-pure"):
        server: Service = start_gateway(backend.url, cpu=cpu, pure=name == "gogate-pure",
                                        env=gateway_env)
        return System(name, server, backend, True)
    if name in ("picows-hub", "picows-hub-uv"):
        return System(name, start_refhub(cpu=cpu, loop_transports=name == "picows-hub-uv"),
                      backend, False)
    baseline = baselines[name]
    env = child_env(bench_settings(backend.url, {**gateway_env, "INTERNAL_API_KEY": KEY}))
    server = launch_gateway(env, command=baseline.argv(env), name=name, cpu=cpu)
    return System(name, server, backend, True, joined=True)
