"""Soak: one gateway under mixed traffic and churn for a long time. Does it stay the same size?

It starts the development backend and one gateway process (the installed package, as
``bench.loadgen`` starts it: ``RATE_LIMIT=0``, no per-user cap, JSON logs at WARNING), creates
users and chats through the development backend, and then, for ``--minutes``:

- every user holds a connection and reads everything; senders post messages to their chats,
  members type, react to and mark read the messages that were acknowledged;
- connections are dropped and reopened (``--churn`` per second), and servers' closes are
  answered by a reconnect;
- tokens live ``--token-ttl`` seconds: fresh ones are minted all along and sent as a new
  ``auth`` on open connections before the old ones expire; ``AUTH_EXPIRED`` is answered by one;
- slow readers (``--slow``) stop reading for 5 to 40 s at a time with a tiny receive window: the
  gateway closes them 1013 (they come back) or they catch up.

Every ``--sample`` seconds it reads the gateway's RSS, its open file descriptors (split into
client sockets, backend sockets and the rest) and its CPU time. Criteria, each one a row of the
table, and the exit code is 1 when one fails:

- RSS drift after warm-up (the first 20 % of the run, at least 10 s): the median of the last
  samples against the median of the first samples after warm-up, at most 5 %;
- file descriptors back to baseline once every client has left: no client socket left, and
  the other descriptors, leaving out the backend client's pooled keep-alive sockets (which it
  keeps for 60 s on purpose), no more than before the first client came;
- no traceback (and no ERROR record) in the gateway's log; the gateway still running;
- no ``INTERNAL_ERROR`` answered to any client.

    python -m bench.soak                   # 30 minutes
    python -m bench.soak --smoke           # 1 minute, small population
    python -m bench.soak --minutes 5 --json soak.json
    py-spy record -o soak.svg --pid <gateway pid>    # while it runs (see PROFILING.md)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import msgspec
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.harness import GATEWAY_CPU, LOADGEN_CPU, Backend
from bench.procs import (
    GatewayProcess,
    cpu_seconds,
    raise_fd_limit,
    rss_bytes,
    start_backend,
    start_gateway,
)

__all__ = ["FdCount", "gateway_fds", "log_faults", "main"]

EMOJI = ("👍", "❤️", "😂", "🎉", "👀")
_NEW_MESSAGE = b'{"event":"new_message"'
_decode = msgspec.json.Decoder()


# --- what the gateway holds -----------------------------------------------------------------


@dataclass(frozen=True)
class FdCount:
    """A process's open file descriptors: all of them, its sockets of client connections (local
    port ``port``, not the listener) and its sockets to the backend (remote port)."""

    total: int
    clients: int
    backend: int

    @property
    def own(self) -> int:
        """Descriptors that are neither client nor backend connections."""
        return self.total - self.clients - self.backend


def _tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every TCP socket of the machine."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                table[inode] = (int(local.rsplit(":", 1)[1], 16),
                                int(remote.rsplit(":", 1)[1], 16), state)
    return table


def gateway_fds(pid: int, port: int, backend_port: int) -> FdCount:
    """Count the descriptors of the gateway process ``pid`` (see :class:`FdCount`)."""
    tcp = _tcp_sockets()
    total = clients = backend = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        total += 1
        if not target.startswith("socket:["):
            continue
        local, remote, state = tcp.get(int(target[8:-1]), (0, 0, ""))
        if local == port and state != "0A":  # 0A: LISTEN
            clients += 1
        elif remote == backend_port:
            backend += 1
    return FdCount(total, clients, backend)


def log_faults(text: str) -> tuple[list[str], list[str]]:
    """Tracebacks and ERROR records in a gateway's JSON log: (tracebacks, errors). A line that
    is not one of its JSON records (a raw traceback on stderr) counts as a traceback."""
    tracebacks, errors = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            tracebacks.append(line)
            continue
        if not isinstance(record, dict) or "exc" in record or "Traceback" in line:
            tracebacks.append(line)
        elif record.get("level") in ("error", "critical"):
            errors.append(line)
    return tracebacks, errors


# --- clients --------------------------------------------------------------------------------


class SoakClient(WSListener):  # type: ignore[misc]
    """One connection of the soak: it answers nothing by itself, counts what it receives and
    hands acks, errors and the server's close to the :class:`Soak`."""

    def __init__(self, soak: Soak, user: int, slow: bool) -> None:
        super().__init__()
        self.soak = soak
        self.user = user
        self.slow = slow
        self.transport: WSTransport | None = None
        self.token = ""
        self.authed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.gone: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.paused = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code().value)
            return
        if frame.msg_type is not WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if payload.startswith(_NEW_MESSAGE):
            self.soak.count["new_message received"] += 1
            return
        self.soak.on_event(self, _decode.decode(payload))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.authed.done():
            self.authed.set_result(False)
        if not self.gone.done():
            self.gone.set_result(self.close_code)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.gone.done()

    def send(self, event: str, data: dict[str, Any], ref: Any = None) -> None:
        if self.open:
            assert self.transport is not None
            body: dict[str, Any] = {"event": event, "data": data}
            if ref is not None:
                body["ref"] = ref
            self.transport.send(WSMsgType.TEXT, msgspec.json.encode(body))

    def disconnect(self) -> None:
        if self.open:
            assert self.transport is not None
            self.transport.send_close()
            self.transport.disconnect()

    def pause(self, paused: bool) -> None:
        if self.transport is not None and self.open and paused != self.paused:
            self.paused = paused
            raw = self.transport.underlying_transport
            raw.pause_reading() if paused else raw.resume_reading()


def _small_window_socket(_: Any) -> socket.socket:
    """A client socket whose receive window (and MSS) is tiny, so that a reader that stops
    reading fills the gateway's buffers after tens of kilobytes, not megabytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if hasattr(socket, "TCP_MAXSEG"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    return sock


# --- the soak -------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the traffic started
    rss: int
    fds: int
    client_fds: int
    backend_fds: int
    connections: int  # open on the soak's side
    cpu: float  # gateway CPU seconds so far


@dataclass
class Criterion:
    name: str
    value: str
    limit: str
    ok: bool


@dataclass
class Soak:
    """The population, its connections, and everything counted while the traffic runs."""

    args: argparse.Namespace
    gateway: GatewayProcess
    backend: Backend
    chats: dict[int, list[int]]  # chat id -> member user ids
    tokens: dict[int, str]  # user id -> freshest token
    user_chats: dict[int, list[int]] = field(default_factory=dict)
    steady: dict[int, SoakClient] = field(default_factory=dict)  # one reading connection a user
    slow: list[SoakClient] = field(default_factory=list)
    recent: collections.deque[tuple[int, int]] = field(
        default_factory=lambda: collections.deque(maxlen=500))  # (chat, message) acked
    count: collections.Counter[str] = field(default_factory=collections.Counter)
    closes: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: list[Sample] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    running: bool = True
    refs: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/ws"

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def ref(self) -> int:
        self.refs += 1
        return self.refs

    # --- what clients receive ---------------------------------------------------------------

    def on_event(self, client: SoakClient, event: dict[str, Any]) -> None:
        name = event.get("event")
        self.count[f"{name} received"] += 1
        if name == "auth_success":
            if not client.authed.done():
                client.authed.set_result(True)
        elif name == "ack":
            message_id = event["data"].get("message_id")
            chat_id = event.get("ref", 0) // 1_000_000 if isinstance(event.get("ref"), int) \
                else 0
            if message_id is not None and chat_id:
                self.recent.append((chat_id, message_id))
        elif name == "error":
            code = event["data"]["code"]
            self.errors[code] += 1
            if code == "AUTH_EXPIRED":
                self.reauth(client)
            if code == "AUTH_FAILED" and not client.authed.done():
                client.authed.set_result(False)

    # --- connections ------------------------------------------------------------------------

    async def connect(self, user: int, slow: bool) -> SoakClient | None:
        """Open and authenticate one connection; None when that failed (counted)."""
        factory = _small_window_socket if slow else None
        try:
            _, listener = await ws_connect(lambda: SoakClient(self, user, slow), self.url,
                                           socket_factory=factory)
        except OSError:
            self.count["connect failures"] += 1
            return None
        client = cast(SoakClient, listener)
        client.token = self.tokens[user]
        client.send("auth", {"token": client.token})
        try:
            ok = await asyncio.wait_for(asyncio.shield(client.authed), 15)
        except TimeoutError:
            ok = False
        if not ok:
            self.count["auth failures"] += 1
            client.disconnect()
            return None
        self.count["connections opened"] += 1
        self.spawn(self._watch(client))
        return client

    async def _watch(self, client: SoakClient) -> None:
        """When the server closes a connection, note why and open it again."""
        code = await client.gone
        if not self.running:
            return
        if code is not None:  # a close the gateway initiated (ours are not watched)
            self.closes[str(code)] += 1
        if not client.slow and self.steady.get(client.user) is client:
            del self.steady[client.user]
            await asyncio.sleep(random.uniform(0.2, 2.0))
            if self.running and client.user not in self.steady:
                fresh = await self.connect(client.user, slow=False)
                if fresh is not None:
                    self.steady[client.user] = fresh

    def reauth(self, client: SoakClient) -> None:
        """A new ``auth`` with the user's freshest token on an open connection."""
        token = self.tokens[client.user]
        if client.open:
            client.token = token
            client.send("auth", {"token": token})
            self.count["re-auth sent"] += 1

    async def churn(self) -> None:
        """Drop a random connection and open it again."""
        if not self.steady:
            return
        user = random.choice(list(self.steady))
        client = self.steady.pop(user)
        client.disconnect()
        self.count["reconnects"] += 1
        await asyncio.sleep(random.uniform(0.0, 1.0))
        fresh = await self.connect(user, slow=False)
        if fresh is not None and self.running:
            self.steady[user] = fresh

    async def slow_reader(self, user: int) -> None:
        """A connection that reads for a while, stops for a while, and comes back when the
        gateway closed it."""
        while self.running:
            client = await self.connect(user, slow=True)
            if client is None:
                await asyncio.sleep(1.0)
                continue
            self.slow.append(client)
            try:
                while self.running and client.open:
                    await asyncio.sleep(random.uniform(3.0, 10.0))
                    if not client.open:
                        break
                    client.pause(True)
                    self.count["slow reader pauses"] += 1
                    await asyncio.wait([client.gone], timeout=random.uniform(5.0, 40.0))
                    if client.open:
                        client.pause(False)
                        self.count["slow reader caught up"] += 1
            finally:
                self.slow.remove(client)
            if client.close_code == 1013:
                self.count["slow reader closed 1013"] += 1
            await asyncio.sleep(random.uniform(0.5, 2.0))

    async def mint(self) -> None:
        """Fresh tokens for everybody, then a re-auth of every connection before its token
        runs out."""
        ttl = self.args.token_ttl
        while self.running:
            users = sorted(self.user_chats)
            minted = await self.backend.post("/api/dev/tokens/bulk",
                                             {"user_ids": users, "ttl": ttl})
            self.tokens.update({int(k): v for k, v in minted["tokens"].items()})
            self.count["tokens minted"] += len(users)
            period = ttl / 3
            clients = [*self.steady.values(), *self.slow]
            for client in clients:
                asyncio.get_running_loop().call_later(random.uniform(0, period), self.reauth,
                                                      client)
            await asyncio.sleep(period)

    # --- traffic ----------------------------------------------------------------------------

    def _member_client(self, chat: int) -> SoakClient | None:
        online = [self.steady[u] for u in self.chats[chat] if u in self.steady]
        return random.choice(online) if online else None

    def send_message(self) -> None:
        chat = random.choice(list(self.chats))
        client = self._member_client(chat)
        if client is not None:
            client.send("send_message", {"chat_id": chat, "text": f"soak {time.time():.3f}"},
                        ref=chat * 1_000_000 + self.ref() % 1_000_000)
            self.count["messages sent"] += 1

    def typing(self) -> None:
        chat = random.choice(list(self.chats))
        client = self._member_client(chat)
        if client is not None:
            client.send("typing", {"chat_id": chat, "is_typing": random.random() < 0.7})
            self.count["typing sent"] += 1

    def react(self) -> None:
        if self.recent:
            chat, message = random.choice(self.recent)
            client = self._member_client(chat)
            if client is not None:
                client.send("add_reaction", {"message_id": message, "chat_id": chat,
                                             "emoji": random.choice(EMOJI)}, ref=self.ref())
                self.count["reactions sent"] += 1

    def mark_read(self) -> None:
        if self.recent:
            chat, message = random.choice(self.recent)
            client = self._member_client(chat)
            if client is not None:
                client.send("mark_read", {"message_ids": [message], "chat_id": chat},
                            ref=self.ref())
                self.count["read receipts sent"] += 1

    async def traffic(self, seconds: float) -> None:
        """Every activity at its rate (events per second), for ``seconds``."""
        args = self.args
        activities: list[tuple[float, Callable[[], Any]]] = [
            (args.rate, self.send_message), (args.typing, self.typing),
            (args.reactions, self.react), (args.reads, self.mark_read),
            (args.churn, lambda: self.spawn(self.churn())),
        ]
        due = [0.0] * len(activities)
        loop = asyncio.get_running_loop()
        start = last = loop.time()
        while loop.time() - start < seconds:
            await asyncio.sleep(0.05)
            now = loop.time()
            for index, (rate, act) in enumerate(activities):
                due[index] += rate * (now - last)
                while due[index] >= 1.0:
                    due[index] -= 1.0
                    act()
            last = now

    async def sampler(self, started: float) -> None:
        backend_port = self.backend.service.port
        while self.running:
            pid = self.gateway.pid
            fds = gateway_fds(pid, self.gateway.port, backend_port)
            self.samples.append(Sample(
                at=time.monotonic() - started, rss=rss_bytes(pid), fds=fds.total,
                client_fds=fds.clients, backend_fds=fds.backend,
                connections=len(self.steady) + len(self.slow), cpu=cpu_seconds(pid)))
            await asyncio.sleep(self.args.sample)


# --- the run --------------------------------------------------------------------------------


async def _population(backend: Backend, users: int, chats: int
                      ) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """``users`` users, each a member of two of ``chats`` chats (consecutive ones)."""
    ids = (await backend.post("/api/dev/users/bulk", {"count": users, "prefix": "soak"}))["ids"]
    members: dict[int, list[int]] = {}
    for index in range(chats):
        chosen = [uid for n, uid in enumerate(ids) if n % chats in (index, (index + 1) % chats)]
        members[await backend.chat(chosen)] = chosen
    user_chats: dict[int, list[int]] = collections.defaultdict(list)
    for chat, chosen in members.items():
        for uid in chosen:
            user_chats[uid].append(chat)
    return members, dict(user_chats)


async def _settle(soak: Soak, baseline_own: int, timeout: float) -> FdCount:
    """Wait until the gateway holds no client socket and no more other descriptors than at
    the start (or ``timeout``); the count at that moment."""
    deadline = time.monotonic() + timeout
    while True:
        fds = gateway_fds(soak.gateway.pid, soak.gateway.port, soak.backend.service.port)
        if (fds.clients == 0 and fds.own <= baseline_own) or time.monotonic() > deadline:
            return fds
        await asyncio.sleep(0.25)


def _median(values: list[int]) -> float:
    return statistics.median(values) if values else float("nan")


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    pin = args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1
    if pin:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    backend = Backend(start_backend(cpu=LOADGEN_CPU if pin else None))
    gateway = start_gateway(backend.url, cpu=GATEWAY_CPU if pin else None, pure=args.pure,
                            env={"LOG_FORMAT": "json", "LOG_LEVEL": "warning"})
    try:
        health = await backend.http.get(f"http://127.0.0.1:{gateway.port}/health")
        implementation = (await health.json()).get("implementation", "?")
        print(f"# gogate soak: gogate {version('gogate')} ({implementation} hot path), loop "
              f"uvloop {version('uvloop')}, python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs" + (f"; gateway pinned to CPU {GATEWAY_CPU}, soak and "
                                          f"backend to CPU {LOADGEN_CPU}" if pin else ""))
        print(f"# {args.minutes:g} min: {args.users} users in {args.chats} chats, "
              f"{args.slow} slow readers; per second: {args.rate:g} messages, {args.typing:g} "
              f"typing, {args.reactions:g} reactions, {args.reads:g} read receipts, "
              f"{args.churn:g} reconnects; tokens live {args.token_ttl:g} s")
        sys.stdout.flush()
        start_fds = gateway_fds(gateway.pid, gateway.port, backend.service.port)
        chats, user_chats = await _population(backend, args.users, args.chats)
        soak = Soak(args, gateway, backend, chats, {}, user_chats)
        minted = await backend.post("/api/dev/tokens/bulk",
                                    {"user_ids": sorted(user_chats), "ttl": args.token_ttl})
        soak.tokens.update({int(k): v for k, v in minted["tokens"].items()})
        opened = await asyncio.gather(*(soak.connect(u, slow=False) for u in user_chats))
        soak.steady.update({c.user: c for c in opened if c is not None})
        started = time.monotonic()
        soak.spawn(soak.sampler(started))
        soak.spawn(soak.mint())
        for user in random.sample(sorted(user_chats), min(args.slow, len(user_chats))):
            soak.spawn(soak.slow_reader(user))
        await soak.traffic(args.minutes * 60)
        soak.running = False
        for client in [*soak.steady.values(), *soak.slow]:
            client.disconnect()
        for task in list(soak.tasks):
            task.cancel()
        await asyncio.gather(*soak.tasks, return_exceptions=True)
        end_fds = await _settle(soak, start_fds.own, timeout=30.0)
        alive = gateway.proc.poll() is None
        tracebacks, error_records = log_faults(gateway.output())
        rows = _criteria(args, soak, start_fds, end_fds, alive, tracebacks, error_records)
        _report(soak, rows, start_fds, end_fds, tracebacks + error_records)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "settings": {k: v for k, v in vars(args).items() if k != "json"},
                "implementation": implementation,
                "criteria": [asdict(r) for r in rows], "counts": dict(soak.count),
                "closes": dict(soak.closes), "errors": dict(soak.errors),
                "samples": [asdict(s) for s in soak.samples]}, indent=1))
        return 0 if all(r.ok for r in rows) else 1
    finally:
        gateway.stop()
        await backend.close()


def _criteria(args: argparse.Namespace, soak: Soak, start: FdCount, end: FdCount, alive: bool,
              tracebacks: list[str], error_records: list[str]) -> list[Criterion]:
    warmup = max(10.0, args.minutes * 60 * 0.2)
    after = [s for s in soak.samples if s.at >= warmup]
    window = max(3, len(after) // 10)  # the first and the last tenth of the samples
    first, last = _median([s.rss for s in after[:window]]), _median(
        [s.rss for s in after[-window:]])
    drift = (last - first) / first * 100 if len(after) >= 2 * window else float("nan")
    mib = 2**20
    return [
        Criterion("RSS drift after warm-up", f"{drift:+.1f} % ({first / mib:.1f} -> "
                  f"{last / mib:.1f} MiB)", "≤ 5 %", drift == drift and drift <= 5.0),
        Criterion("client sockets after all left", str(end.clients), "0", end.clients == 0),
        Criterion("other fds after all left", f"{end.own} (before: {start.own})",
                  f"≤ {start.own}", end.own <= start.own),
        Criterion("tracebacks in the gateway's log", str(len(tracebacks)), "0",
                  not tracebacks),
        Criterion("ERROR records in the gateway's log", str(len(error_records)), "0",
                  not error_records),
        Criterion("INTERNAL_ERROR answers", str(soak.errors.get("INTERNAL_ERROR", 0)), "0",
                  not soak.errors.get("INTERNAL_ERROR")),
        Criterion("gateway still running", "yes" if alive else "no", "yes", alive),
    ]


def _report(soak: Soak, rows: list[Criterion], start: FdCount, end: FdCount,
            faults: list[str]) -> None:
    samples = soak.samples
    print("\n## soak criteria\n")
    print("| criterion | value | limit | ok |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.name} | {row.value} | {row.limit} | {'yes' if row.ok else 'NO'} |")
    wall = samples[-1].at if samples else 0.0
    cpu = samples[-1].cpu - samples[0].cpu if len(samples) > 1 else 0.0
    print("\n## traffic\n")
    print("| figure | value |")
    print("|---|---|")
    figures: dict[str, Any] = dict(sorted(soak.count.items()))
    figures["closes by the gateway"] = dict(sorted(soak.closes.items())) or "none"
    figures["errors answered"] = dict(sorted(soak.errors.items())) or "none"
    figures["gateway CPU"] = f"{cpu / max(wall, 1e-9) * 100:.1f} % of one core"
    figures["peak RSS"] = f"{max((s.rss for s in samples), default=0) / 2**20:.1f} MiB"
    figures["peak connections"] = max((s.connections for s in samples), default=0)
    figures["fds at start / end"] = f"{start.total} / {end.total} ({end.backend} pooled " \
                                    "backend sockets at the end)"
    figures["samples"] = len(samples)
    for name, value in figures.items():
        print(f"| {name} | {value} |")
    for line in faults[:10]:
        print(f"\n{line}")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--slow", type=int, default=10, help="slow readers")
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second")
    parser.add_argument("--typing", type=float, default=20.0, help="typing events per second")
    parser.add_argument("--reactions", type=float, default=10.0, help="reactions per second")
    parser.add_argument("--reads", type=float, default=10.0, help="read receipts per second")
    parser.add_argument("--churn", type=float, default=3.0, help="reconnects per second")
    parser.add_argument("--token-ttl", type=float, default=90.0,
                        help="seconds a token lives (fresh ones are sent before)")
    parser.add_argument("--sample", type=float, default=5.0,
                        help="seconds between samples of RSS and fds")
    parser.add_argument("--pure", action="store_true",
                        help="run the gateway with its pure-Python hot path")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write the criteria, counts and samples as JSON")
    parser.add_argument("--smoke", action="store_true",
                        help="1 minute, small population: checks that the soak runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.minutes, args.users, args.chats, args.slow = 1.0, 60, 4, 4
        args.rate, args.typing, args.reactions, args.reads, args.churn = 20, 10, 5, 5, 2
        args.token_ttl, args.sample = 30.0, 2.0
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
