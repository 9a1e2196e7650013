"""Connection scenarios of the load generator: how fast a gateway admits clients, and how it
readmits all of them at once.

``connect``  N connections, ``--concurrency`` handshakes in flight (256 by default), each
             authenticated: connect + auth rate, handshake + auth p50/p99 (connect start to
             ``auth_success``), gateway CPU per connection, backend validate calls per
             connection, and the CPU share of the load generator and of the backend (near
             100 % between them, CPU 1 is the limit, not the gateway). Variants: ``backend``
             (every token validated by the backend, the gateway's default settings), ``jwt``
             (the gateway verifies the development backend's RS256 tokens itself,
             ``JWT_PUBLIC_KEY``), ``warm`` (the same tokens connect a second time with
             ``AUTH_CACHE_TTL`` on; only the second pass counts).
``storm``    N connected plus ``--open`` connections in one chat receiving
             ``--storm-rate`` messages a second (in a process of their own, so that the
             storm's clients do not delay what they measure); the N are dropped at once and
             all reconnect with their tokens, ``--storm-concurrency`` handshakes in flight,
             paced like the TypeScript client (``clients/js``, ``backoff.ts``): the first
             attempt after the drop waits a random 0 to 0.5 s, and a refused (``503``) or
             failed attempt number n waits ``Retry-After`` (1 s) plus a random 0 to
             min(20, 0.5 x 2^n) s (exponential backoff with full jitter, never sooner than
             the gateway asked); every system runs with the same clients.
             Reported: time until all are authenticated again, retries, backend validate
             calls, gateway CPU per reconnect (the drops included), and the p99 delivery
             latency of the open connections before the drop and during the storm, the
             latter also split into the first second (when the gateway tears down the
             dropped connections) and the rest (readmission). The open connections share the
             load generator's CPU with the storm's clients; ``watcher lag p99 ms`` is how
             late their own process ran during the storm (a 10 ms timer's lateness), the
             part of their latency that is the load generator's, not the gateway's.
             Variants: ``backend`` (default settings: the validation cache is on),
             ``jwt`` (local verification), ``rate`` (``MAX_CONNECT_RATE=--connect-rate``).

A gateway that cannot verify tokens itself still runs the ``jwt`` variant, through the backend;
its validate calls show it, and a note under the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from bench.harness import (
    Backend,
    Client,
    Meter,
    Row,
    System,
    close_clients,
    connect_one,
    open_clients,
    percentile,
)

__all__ = ["CONNECT_VARIANTS", "STORM_VARIANTS", "Variant", "connect", "storm"]


@dataclass(frozen=True)
class Variant:
    """A way to run a scenario: a label for its table and the gateway settings it needs
    (``{public_key}`` stands for the development backend's public key file)."""

    label: str
    env: dict[str, str]


CONNECT_VARIANTS = {
    "backend": Variant("validated by the backend", {}),
    "jwt": Variant("local JWT (RS256)", {"JWT_PUBLIC_KEY": "{public_key}"}),
    "warm": Variant("warm validation cache, same tokens again", {"AUTH_CACHE_TTL": "300"}),
}
STORM_VARIANTS = {
    "backend": Variant("default settings (validation cache on)", {}),
    "jwt": Variant("local JWT (RS256)", {"JWT_PUBLIC_KEY": "{public_key}"}),
    "rate": Variant("MAX_CONNECT_RATE={connect_rate}", {"MAX_CONNECT_RATE": "{connect_rate}"}),
}


async def _validate_calls(backend: Backend) -> int:
    return (await backend.calls()).get("validate", 0)


async def connect(system: System, args: argparse.Namespace, variant: str) -> Row:
    row = Row(system.name)
    backend = system.backend
    users = await backend.users(args.connections)
    tokens: list[str | None] = [t if system.protocol else None for _, t in users]
    port = system.server.port
    if variant == "warm":  # the first pass fills the cache; it is not measured
        clients, _ = await open_clients(port, tokens, args.concurrency, system.joined)
        close_clients(clients)
        await asyncio.sleep(1.0)
    await backend.reset_calls()
    meter = Meter(system.server)
    backend_cpu = backend.service.cpu_seconds()
    meter.start()
    clients, timings = await open_clients(port, tokens, args.concurrency, system.joined)
    meter.stop()
    backend_cpu = backend.service.cpu_seconds() - backend_cpu
    validates = await _validate_calls(backend)
    row.values["connects/s"] = len(clients) / meter.wall
    row.values["handshake p50 ms"] = percentile(timings, 0.5) * 1000
    row.values["handshake p99 ms"] = percentile(timings, 0.99) * 1000
    row.values["gw µs/connect"] = meter.server_cpu / max(1, len(clients)) * 1e6
    row.values["validate/connect"] = validates / max(1, len(clients))
    row.values["loadgen CPU %"] = meter.own_cpu / meter.wall * 100
    row.values["backend CPU %"] = backend_cpu / meter.wall * 100
    close_clients(clients)
    await asyncio.sleep(0.5)
    return row


#: The client's pacing (``clients/js/src/backoff.ts``): the first delay's upper bound, the
#: growth per attempt, the cap; and ``Retry-After`` of a ``503`` (the gateway says 1 s).
BACKOFF_INITIAL, BACKOFF_FACTOR, BACKOFF_CAP, RETRY_AFTER = 0.5, 2.0, 20.0, 1.0


def backoff_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt`` (0: the first): uniformly random up to
    ``min(cap, initial x factor^attempt)`` ("full jitter")."""
    return random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_INITIAL * BACKOFF_FACTOR ** attempt))


async def reconnect_all(port: int, tokens: list[str], concurrency: int, timeout: float,
                        joined: bool, dropped: bool = False) -> tuple[list[Client], int]:
    """Connect and authenticate every token until ``timeout``, a refused or failed attempt
    retried after ``Retry-After`` plus the backoff delay; ``dropped``: the clients were just
    cut off, so each waits the backoff's first delay before its first attempt, as the
    TypeScript client does. Returns the clients that made it and the number of retries."""
    url = f"ws://127.0.0.1:{port}/ws"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    semaphore = asyncio.Semaphore(concurrency)
    retries = 0

    async def one(index: int, token: str) -> Client | None:
        nonlocal retries
        attempt = 0
        if dropped:
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1
        while True:
            async with semaphore:
                try:
                    return await connect_one(url, token, index, joined)
                except Exception:  # refused upgrade (503), reset, refused auth: try again
                    retries += 1
            if loop.time() > deadline:
                return None
            await asyncio.sleep(RETRY_AFTER + backoff_delay(attempt))
            attempt += 1

    results = await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
    return [c for c in results if c is not None], retries


def _pump(sender: Client, chat_id: int, rate: float) -> tuple[Callable[[], None],
                                                               Awaitable[None]]:
    """Send one stamped message every 1/rate s until the returned stop function is called."""
    running = True

    async def run() -> None:
        loop = asyncio.get_running_loop()
        next_at, ref = loop.time(), 0
        while running:
            ref += 1
            sender.send(b'{"event":"send_message","data":{"chat_id":%d,"text":"t=%d"},'
                        b'"ref":%d}' % (chat_id, time.monotonic_ns(), ref))
            next_at += 1.0 / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def stop() -> None:
        nonlocal running
        running = False

    return stop, asyncio.ensure_future(run())


def _take(clients: list[Client], lags: list[float]) -> tuple[list[float], list[float]]:
    """The latencies recorded so far and the loop's lateness meanwhile, in ms; the records
    start afresh."""
    taken = [ns / 1e6 for client in clients for ns in client.latencies]
    for client in clients:
        client.latencies.clear()
    late = lags[:]
    lags.clear()
    return taken, late


async def _lateness(lags: list[float], period: float = 0.01) -> None:
    """How late this process's loop runs a timer of ``period`` s, in ms, again and again."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        lags.append(max(0.0, loop.time() - due) * 1000)


async def _watch(port: int, tokens: list[str], chat_id: int, rate: float, joined: bool,
                 pipe: Connection) -> None:
    """The open connections: the first token sends, the others record delivery latency;
    ``take`` on the pipe answers the latencies and loop lateness recorded since the last
    ``take``."""
    steady, _ = await reconnect_all(port, tokens, 64, 60.0, joined)
    if len(steady) < len(tokens):
        pipe.send(None)
        return
    sender, receivers = steady[0], steady[1:]
    for client in receivers:
        client.track = True
    stop_pump, pumping = _pump(sender, chat_id, rate)
    lags: list[float] = []
    probe = asyncio.ensure_future(_lateness(lags))
    finished = asyncio.Event()

    def on_command() -> None:
        command = pipe.recv()
        os.set_blocking(pipe.fileno(), True)  # the loop made it non-blocking; answers are big
        if command == "take":
            pipe.send(_take(receivers, lags))
        else:
            finished.set()

    asyncio.get_running_loop().add_reader(pipe.fileno(), on_command)
    pipe.send(len(steady))
    await finished.wait()
    probe.cancel()
    stop_pump()
    await pumping
    close_clients(steady)


def _watch_main(port: int, tokens: list[str], chat_id: int, rate: float, joined: bool,
                pipe: Connection) -> None:
    uvloop.run(_watch(port, tokens, chat_id, rate, joined, pipe))


class Watcher:
    """The open connections of a storm, in a process of their own (on the load generator's
    CPU): their latencies are not delayed by the reconnecting clients' work in this one."""

    def __init__(self, port: int, tokens: list[str], chat_id: int, rate: float,
                 joined: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._proc = context.Process(target=_watch_main, daemon=True,
                                     args=(port, tokens, chat_id, rate, joined, child))
        self._proc.start()

    async def _ask(self, command: str | None) -> Any:
        if command is not None:
            self._pipe.send(command)
        return await asyncio.to_thread(self._pipe.recv)

    async def ready(self) -> None:
        if await self._ask(None) is None:
            raise RuntimeError("the open connections were not all admitted")

    async def take(self) -> tuple[list[float], list[float]]:
        """Delivery latencies and the watcher's loop lateness since the last take, in ms."""
        taken: tuple[list[float], list[float]] = await self._ask("take")
        return taken

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def _profile(args: argparse.Namespace, variant: str, system: System) -> str | None:
    """With ``--profile DIR``: where py-spy writes the gateway's samples of the storm."""
    if not args.profile:
        return None
    os.makedirs(args.profile, exist_ok=True)
    return os.path.join(args.profile, f"storm-{variant}-{system.name}.txt")


async def storm(system: System, args: argparse.Namespace, variant: str) -> Row:
    row = Row(system.name)
    backend = system.backend
    port = system.server.port
    users = await backend.users(1 + args.open + args.connections)
    sender_user, open_users, crowd_users = users[0], users[1:1 + args.open], users[1 + args.open:]
    chat_id = await backend.chat([sender_user[0], *(uid for uid, _ in open_users)])
    watcher = Watcher(port, [sender_user[1], *(t for _, t in open_users)], chat_id,
                      args.storm_rate, system.joined)
    try:
        await watcher.ready()
        # Admission control may refuse some of these first connections too: they retry.
        crowd_tokens = [t for _, t in crowd_users]
        crowd, _ = await reconnect_all(port, crowd_tokens, args.concurrency,
                                       args.storm_timeout, system.joined)
        if len(crowd) < len(crowd_tokens):
            raise RuntimeError(f"{system.name} did not admit every connection in "
                               f"{args.storm_timeout:g} s")
        await asyncio.sleep(args.warmup)
        await watcher.take()
        await asyncio.sleep(args.before)
        before, _ = await watcher.take()
        await backend.reset_calls()
        meter = Meter(system.server, _profile(args, variant, system))
        backend_cpu = backend.service.cpu_seconds()
        meter.start()
        close_clients(crowd)

        async def readmit() -> tuple[list[Client], int]:
            readmitted = await reconnect_all(port, crowd_tokens, args.storm_concurrency,
                                             args.storm_timeout, system.joined, dropped=True)
            meter.stop()
            return readmitted

        storming = asyncio.ensure_future(readmit())
        await asyncio.wait({storming}, timeout=1.0)
        first, first_lags = await watcher.take()  # the drop itself, and the first admissions
        back, retries = await storming
        backend_cpu = backend.service.cpu_seconds() - backend_cpu
        rest, rest_lags = await watcher.take()
    finally:
        watcher.stop()
    validates = await _validate_calls(backend)
    row.values["back"] = len(back)
    row.values["all back s"] = meter.wall if len(back) == len(crowd_tokens) else float("nan")
    row.values["reconnects/s"] = len(back) / meter.wall
    row.values["retries"] = retries
    row.values["validate/connect"] = validates / max(1, len(crowd_tokens))
    row.values["gw µs/reconnect"] = meter.server_cpu / max(1, len(back)) * 1e6
    row.values["p99 before ms"] = percentile(before, 0.99)
    row.values["p99 during ms"] = percentile(first + rest, 0.99)
    row.values["p99 during/before"] = (row.values["p99 during ms"]
                                       / row.values["p99 before ms"])
    row.values["p99 1st s ms"] = percentile(first, 0.99)
    row.values["p99 after 1st s ms"] = percentile(rest, 0.99)
    row.values["watcher lag p99 ms"] = percentile(first_lags + rest_lags, 0.99)
    row.values["gw CPU %"] = meter.server_cpu / meter.wall * 100
    row.values["loadgen CPU %"] = meter.own_cpu / meter.wall * 100
    row.values["backend CPU %"] = backend_cpu / meter.wall * 100
    close_clients(back)
    await asyncio.sleep(0.5)
    return row
