"""Load generator for gogate: picows clients speaking the whole BuzzChat protocol.

It starts the development backend and the gateway itself (and the reference picows hub for
comparison), creates users, chats and tokens through the development backend, and measures:

``fanout``   C=1 chat x M members, S senders each keeping W messages in flight: deliveries/s
             and gateway CPU per delivery at saturation; then p50/p99/p999 latency and gateway
             CPU at a fixed delivery rate; loss.
``idle``     N authenticated idle connections: gateway RSS growth per connection.
``connect``  N connections opened C at a time, each authenticated: rate and handshake latency.
``typing``   a typing storm (T typists x K events in one second in one chat): member-list
             calls at the backend and user_typing deliveries per receiver.

Every scenario runs gogate (compiled hot path), gogate with the pure-Python twin, and where it
applies the bare picows hub of ``bench.refhub``, in one run, and prints a table with ratios.
The gateway is pinned to CPU 0; the load generator and the backend share CPU 1 (``--no-pin``
turns pinning off). The load generator reports its own CPU share: near 100 % it, not the
gateway, is the bottleneck.

    python -m bench.loadgen fanout --members 1000 --duration 5
    python -m bench.loadgen all --smoke          # tiny sizes: checks that everything runs
    py-spy record -o fanout.svg --pid <gateway pid>   # while a scenario runs (see PROFILING.md)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.procs import (
    Service,
    raise_fd_limit,
    start_backend,
    start_gateway,
    start_refhub,
)

__all__ = ["main"]

GATEWAY_CPU, LOADGEN_CPU = 0, 1
_ACK = b'{"event":"ack"'
_AUTH_OK = b'{"event":"auth_success"'


class Client(WSListener):  # type: ignore[misc]
    """One benchmark connection. Before ``ready`` it hands the first frame to ``waiter``;
    afterwards it counts deliveries, and optionally records their latency or acks."""

    __slots__ = ("acks", "latencies", "on_ack", "own", "received", "track", "transport",
                 "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.received = 0
        self.acks = 0
        self.track = False
        self.latencies: list[int] = []
        self.on_ack: Callable[[], None] | None = None
        self.own: bytes | None = None  # marker of this sender's messages (reference hub)

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
        if self.on_ack is None and not self.track:
            self.received += 1
            return
        payload = frame.get_payload_as_bytes()
        if self.on_ack is not None:
            if payload.startswith(_ACK):
                self.acks += 1
                self.on_ack()
                return
            if self.own is not None and self.own in payload:
                self.acks += 1  # and it is a delivery too
                self.on_ack()
        self.received += 1
        if self.track:
            start = payload.find(b"t=")
            if start >= 0:
                end = start + 2
                while 48 <= payload[end] <= 57:
                    end += 1
                self.latencies.append(time.monotonic_ns() - int(payload[start + 2:end]))

    def send(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, text)

    def next_frame(self) -> asyncio.Future[bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter


# --- setup through the development backend --------------------------------------------------


class Backend:
    def __init__(self, service: Service) -> None:
        self.url = f"http://127.0.0.1:{service.port}"
        self.service = service
        self.http = aiohttp.ClientSession()

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
        async with self.http.get(self.url + "/api/dev/stats") as response:
            calls: dict[str, int] = (await response.json())["calls"]
            return calls

    async def reset_calls(self) -> None:
        async with self.http.delete(self.url + "/api/dev/stats"):
            pass

    async def close(self) -> None:
        await self.http.close()


# --- connecting -----------------------------------------------------------------------------


def _local_addr(index: int) -> tuple[str, int] | None:
    """Spread connections over 127.0.0.x source addresses beyond 20,000 of them."""
    return None if index < 20000 else (f"127.0.0.{2 + index // 20000}", 0)


async def open_clients(port: int, tokens: list[str | None], concurrency: int = 200
                       ) -> tuple[list[Client], list[float]]:
    """Connect (and authenticate, when a token is given) ``len(tokens)`` clients; returns them
    with each one's handshake time (connect start → auth_success) in seconds."""
    url = f"ws://127.0.0.1:{port}/ws"
    clients: list[Client | None] = [None] * len(tokens)
    timings: list[float] = [0.0] * len(tokens)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, token: str | None) -> None:
        async with semaphore:
            started = time.perf_counter()
            extra = {} if (addr := _local_addr(index)) is None else {"local_addr": addr}
            _, client = await ws_connect(Client, url, **extra)
            if token is not None:
                answer = client.next_frame()
                client.send(b'{"event":"auth","data":{"token":"%s"}}' % token.encode())
                reply = await asyncio.wait_for(answer, 30)
                if not reply.startswith(_AUTH_OK):
                    raise RuntimeError(f"auth refused: {reply[:200]!r}")
            timings[index] = time.perf_counter() - started
            clients[index] = client

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


def _profile_path(args: argparse.Namespace, name: str, system: System) -> str | None:
    if not args.profile:
        return None
    os.makedirs(args.profile, exist_ok=True)
    return os.path.join(args.profile, f"{name}-{system.name}.txt")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    system: str
    values: dict[str, float] = field(default_factory=dict)


# --- systems under test ---------------------------------------------------------------------


@dataclass
class System:
    """A server under test and how to speak to it."""

    name: str
    server: Service
    protocol: bool  # True: the BuzzChat protocol (gogate); False: the bare hub
    extra: list[Service] = field(default_factory=list)

    def stop(self) -> None:
        self.server.stop()
        for service in self.extra:
            service.stop()


def systems_for(names: list[str], backend: Backend, pin: bool, gateway_env: dict[str, str]
                ) -> list[Callable[[], System]]:
    cpu = GATEWAY_CPU if pin else None
    makers: dict[str, Callable[[], System]] = {
        "gogate": lambda: System("gogate", start_gateway(backend.url, cpu=cpu,
                                                         env=gateway_env)[0], True),
        "gogate-pure": lambda: System("gogate-pure", start_gateway(
            backend.url, cpu=cpu, pure=True, env=gateway_env)[0], True),
        "picows-hub": lambda: System("picows-hub", start_refhub(cpu=cpu), False),
        "picows-hub-uv": lambda: System("picows-hub-uv", start_refhub(
            cpu=cpu, loop_transports=True), False),
    }
    return [makers[name] for name in names]


def _message(chat_id: int, sender: int, protocol: bool, ref: int) -> bytes:
    stamp = time.monotonic_ns()
    if protocol:
        return (b'{"event":"send_message","data":{"chat_id":%d,"text":"t=%d s=%d"},"ref":%d}'
                % (chat_id, stamp, sender, ref))
    # The reference hub relays bytes as they are: send what gogate's new_message weighs.
    return (b'{"event":"new_message","data":{"id":%d,"chat_id":%d,"user":{"id":%d,'
            b'"full_name":"Load User"},"type":"text","text":"t=%d s=%d","reply_to":null,'
            b'"attachments":[],"reactions":[],"read_count":0,"mentions":null,'
            b'"created_at":"2026-01-01T00:00:00+00:00","edited_at":null,"is_edited":false}}'
            % (ref, chat_id, sender, stamp, sender))


async def _population(backend: Backend, system: System, members: int, senders: int
                      ) -> tuple[int, list[Client], list[Client]]:
    users = await backend.users(members + senders)
    chat_id = await backend.chat([uid for uid, _ in users])
    tokens: list[str | None] = [t if system.protocol else None for _, t in users]
    clients, _ = await open_clients(system.server.port, tokens)
    return chat_id, clients[:members], clients[members:]


async def fanout(system: System, backend: Backend, args: argparse.Namespace) -> Row:
    """Saturation with a bounded in-flight window, then a fixed delivery rate."""
    row = Row(system.name)
    chat_id, receivers, senders = await _population(backend, system, args.members, args.senders)
    everyone = receivers + senders
    audience = len(everyone)
    running = True
    sent = 0

    def pump(index: int, client: Client) -> Callable[[], None]:
        def on_ack() -> None:
            nonlocal sent
            if running:
                sent += 1
                client.send(_message(chat_id, index, system.protocol, sent))
        return on_ack

    for index, client in enumerate(senders):
        client.on_ack = pump(index, client)
        if not system.protocol:  # the hub has no ack: a sender's own copy stands for it
            client.own = b"s=%d\"" % index
    # Saturation: every sender keeps a window of messages in flight.
    meter = Meter(system.server, _profile_path(args, "fanout-saturation", system))
    for index, client in enumerate(senders):
        for _ in range(args.window):
            sent += 1
            client.send(_message(chat_id, index, system.protocol, sent))
    await asyncio.sleep(args.warmup)
    before = sum(c.received for c in everyone)
    meter.start()
    await asyncio.sleep(args.duration)
    meter.stop()
    delivered = sum(c.received for c in everyone) - before
    running = False
    await asyncio.sleep(1.0)  # let the last windows drain
    acked = sum(c.acks for c in senders)
    total = sum(c.received for c in everyone)
    row.values["deliveries/s"] = delivered / meter.wall
    row.values["gw µs/delivery"] = meter.server_cpu / max(1, delivered) * 1e6
    row.values["gw CPU %"] = meter.server_cpu / meter.wall * 100
    row.values["loadgen CPU %"] = meter.own_cpu / meter.wall * 100
    row.values["loss"] = max(0, acked * audience - total) if system.protocol else float("nan")

    # Fixed rate: messages spread evenly so that deliveries/s equals --rate.
    for client in everyone:
        client.track = True
        client.latencies.clear()
    for client in senders:
        client.on_ack = lambda: None
    interval = audience / args.rate
    loop = asyncio.get_running_loop()
    meter = Meter(system.server, _profile_path(args, "fanout-fixed-rate", system))
    meter.start()
    deadline = loop.time() + args.duration
    next_at = loop.time()
    count = 0
    while loop.time() < deadline:
        sender = senders[count % len(senders)]
        sent += 1
        count += 1
        sender.send(_message(chat_id, count % len(senders), system.protocol, sent))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    meter.stop()
    await asyncio.sleep(1.0)
    latencies = [ns / 1e6 for c in everyone for ns in c.latencies]
    row.values["fixed-rate gw CPU %"] = meter.server_cpu / meter.wall * 100
    row.values["p50 ms"] = percentile(latencies, 0.50)
    row.values["p99 ms"] = percentile(latencies, 0.99)
    row.values["p999 ms"] = percentile(latencies, 0.999)
    row.values["fixed-rate loss"] = max(0, count * audience - len(latencies))
    close_clients(everyone)
    return row


async def idle(system: System, backend: Backend, args: argparse.Namespace) -> Row:
    row = Row(system.name)
    users = await backend.users(args.connections)
    warm, _ = await open_clients(system.server.port,
                                 [users[0][1] if system.protocol else None])
    await asyncio.sleep(0.5)
    before = system.server.rss_bytes()
    tokens: list[str | None] = [t if system.protocol else None for _, t in users[1:]]
    clients, _ = await open_clients(system.server.port, tokens)
    await asyncio.sleep(2.0)
    after = system.server.rss_bytes()
    row.values["connections"] = len(clients)
    row.values["KB/connection"] = (after - before) / max(1, len(clients)) / 1024
    row.values["gw RSS MB"] = after / 2**20
    close_clients(clients + warm)
    return row


async def connect(system: System, backend: Backend, args: argparse.Namespace) -> Row:
    row = Row(system.name)
    users = await backend.users(args.connections)
    tokens: list[str | None] = [t if system.protocol else None for _, t in users]
    meter = Meter(system.server, _profile_path(args, "connect", system))
    meter.start()
    clients, timings = await open_clients(system.server.port, tokens, args.concurrency)
    meter.stop()
    row.values["connects/s"] = len(clients) / meter.wall
    row.values["handshake p50 ms"] = percentile(timings, 0.5) * 1000
    row.values["handshake p99 ms"] = percentile(timings, 0.99) * 1000
    row.values["gw µs/connect"] = meter.server_cpu / max(1, len(clients)) * 1e6
    row.values["loadgen CPU %"] = meter.own_cpu / meter.wall * 100
    close_clients(clients)
    return row


async def typing(system: System, backend: Backend, args: argparse.Namespace) -> Row:
    row = Row(system.name)
    chat_id, receivers, typists = await _population(backend, system, args.members,
                                                    args.typists)
    await backend.reset_calls()
    events = args.typists * args.events
    frame = b'{"event":"typing","data":{"chat_id":%d,"is_typing":true}}' % chat_id
    meter = Meter(system.server)
    meter.start()
    for _ in range(args.events):
        for client in typists:
            client.send(frame)
        await asyncio.sleep(1.0 / args.events)
    await asyncio.sleep(0.5)
    meter.stop()
    calls = await backend.calls()
    per_receiver = [c.received for c in receivers]
    row.values["typing events"] = events
    row.values["members calls"] = calls.get("members", 0)
    row.values["user_typing/receiver max"] = max(per_receiver, default=0)
    row.values["user_typing/receiver per typist"] = (
        statistics.mean(per_receiver) / args.typists if per_receiver else float("nan"))
    row.values["gw CPU ms"] = meter.server_cpu * 1000
    close_clients(receivers + typists)
    return row


SCENARIOS = {
    "fanout": (fanout, ["gogate", "gogate-pure", "picows-hub", "picows-hub-uv"]),
    "idle": (idle, ["gogate", "gogate-pure", "picows-hub", "picows-hub-uv"]),
    "connect": (connect, ["gogate", "gogate-pure"]),
    "typing": (typing, ["gogate"]),
}


def median_row(rows: list[Row]) -> Row:
    """The median of each figure over repeated runs of one system."""
    keys = list(dict.fromkeys(k for row in rows for k in row.values))
    return Row(rows[0].system, {k: statistics.median(r.values.get(k, float("nan"))
                                                     for r in rows) for k in keys})


def print_table(title: str, rows: list[Row], baseline: str | None, repeat: int = 1) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row.values))
    print(f"\n## {title}\n")
    print("| system | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    base = next((r for r in rows if r.system == baseline), None)
    for row in rows:
        cells = []
        for column in columns:
            value = row.values.get(column, float("nan"))
            cell = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
            if base is not None and row is not base and base.values.get(column):
                cell += f" ({value / base.values[column]:.2f}x)"
            cells.append(cell)
        print(f"| {row.system} | " + " | ".join(cells) + " |")
    if base is not None:
        print(f"\nratios in parentheses are against {baseline}, measured in the same run"
              + (f"; medians of {repeat} interleaved runs" if repeat > 1 else ""))
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    if args.pin and hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    backend_cpu = {"gateway": GATEWAY_CPU, "loadgen": LOADGEN_CPU}.get(args.backend_cpu)
    backend_service = start_backend(cpu=backend_cpu if args.pin else None)
    backend = Backend(backend_service)
    gateway_env = {"SEND_QUEUE_SIZE": str(args.send_queue)}
    print(f"# gogate load benchmarks: loop uvloop {uvloop.__version__}, python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          + (f"gateway pinned to CPU {GATEWAY_CPU}, load generator to CPU {LOADGEN_CPU}, "
             f"development backend: {args.backend_cpu}" if args.pin else "no pinning"))
    try:
        names = ["fanout", "idle", "connect", "typing"] if args.scenario == "all" \
            else [args.scenario]
        for name in names:
            scenario, systems = SCENARIOS[name]
            chosen = [s for s in systems if s in args.systems] if args.systems else systems
            runs: dict[str, list[Row]] = {}
            makers = systems_for(chosen, backend, args.pin, gateway_env)
            for _ in range(args.repeat):  # systems interleaved, so drift hits them alike
                for system_name, make in zip(chosen, makers, strict=True):
                    system = make()
                    try:
                        runs.setdefault(system_name, []).append(
                            await scenario(system, backend, args))
                    finally:
                        system.stop()
            rows = [median_row(name_runs) for name_runs in runs.values()]
            baseline = "picows-hub" if "picows-hub" in chosen else (
                "gogate-pure" if "gogate-pure" in chosen else None)
            print_table(_title(name, args), rows, baseline, args.repeat)
    finally:
        await backend.close()
        backend_service.stop()
    return 0


def _title(name: str, args: argparse.Namespace) -> str:
    return {
        "fanout": f"fanout: 1 chat x {args.members} members, {args.senders} senders x "
                  f"{args.window} in flight, {args.duration:g} s; fixed rate "
                  f"{args.rate:,.0f} deliveries/s",
        "idle": f"idle: {args.connections:,} authenticated connections",
        "connect": f"connect: {args.connections:,} connections + auth, {args.concurrency} "
                   "at a time",
        "typing": f"typing storm: {args.typists} typists x {args.events} events in 1 s, "
                  f"{args.members} receivers",
    }[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["fanout", "idle", "connect", "typing", "all"])
    parser.add_argument("--systems", nargs="*", default=None,
                        help="subset of gogate, gogate-pure, picows-hub, picows-hub-uv")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--window", type=int, default=4, help="messages in flight per sender")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=20000.0, help="deliveries/s, fixed rate")
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--typists", type=int, default=100)
    parser.add_argument("--events", type=int, default=20, help="typing events per typist")
    parser.add_argument("--send-queue", type=int, default=4096,
                        help="SEND_QUEUE_SIZE of the gateway under test")
    parser.add_argument("--backend-cpu", choices=["loadgen", "gateway", "any"],
                        default="loadgen",
                        help="where the development backend runs: on the load generator's CPU "
                             "(default), on the gateway's, or unpinned")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every system this many times, interleaved; report medians")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="sample the gateway with py-spy during the fan-out windows; "
                             "collapsed stacks are written to DIR (see bench/PROFILING.md)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: check that the scenarios run and report figures")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.members, args.senders, args.window = 50, 2, 2
        args.duration, args.warmup, args.rate = 1.0, 0.3, 2000.0
        args.connections, args.concurrency = 200, 50
        args.typists, args.events = 10, 5
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
