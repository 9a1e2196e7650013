"""What scaling out costs per event: fan-out across workers and across hosts, each as a ratio
to the same load inside one worker, measured in one run.

Configurations, each with one chat of M members and S senders keeping W messages in flight:

``1 worker``           everyone on one worker (the reference);
``2 workers, across``  ``--workers 2``; the senders sit on one worker, and the receivers
                       counted sit on the other;
``2 hosts, Redis``     two deployments sharing one Redis; the senders on host A, the
                       receivers on host B.

Every gateway process (supervisor and workers) is pinned to CPU 0, so the figures are CPU
per delivery over the whole tree, plus Redis's CPU, against the single worker's. The load
generator and the backend run on CPU 1.

    python -m bench.scaleout [--members 500 --senders 8 --duration 4] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import uvloop

from bench.harness import GATEWAY_CPU, LOADGEN_CPU, Backend, Client, open_clients
from bench.procs import Service, raise_fd_limit, start_backend, start_gateway, start_redis

__all__ = ["main"]


def _worker_of(client: Client) -> str:
    assert client.transport is not None
    return str(client.transport.response.headers.get("X-Gogate-Worker", "0"))


async def _measure(senders: list[Client], receivers: list[Client], chat_id: int,
                   services: list[Service], args: argparse.Namespace) -> dict[str, float]:
    running = True
    sent = 0

    def message() -> bytes:
        nonlocal sent
        sent += 1
        return (b'{"event":"send_message","data":{"chat_id":%d,"text":"t=%d"},"ref":%d}'
                % (chat_id, time.monotonic_ns(), sent))

    for client in senders:
        def on_ack(client: Client = client) -> None:
            if running:
                client.send(message())
        client.on_ack = on_ack
        for _ in range(args.window):
            client.send(message())
    await asyncio.sleep(args.warmup)
    before = sum(c.received for c in receivers)
    cpu_before = sum(s.cpu_seconds() for s in services)
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    wall = time.perf_counter() - started
    cpu = sum(s.cpu_seconds() for s in services) - cpu_before
    delivered = sum(c.received for c in receivers) - before
    running = False
    await asyncio.sleep(1.0)
    _close(senders + receivers)
    return {"deliveries/s": delivered / wall, "µs CPU/delivery": cpu / max(1, delivered) * 1e6,
            "receivers": len(receivers)}


async def _connect(backend: Backend, port: int, count: int
                   ) -> tuple[list[int], list[Client]]:
    users = await backend.users(count)
    clients, _ = await open_clients(port, [token for _, token in users])
    return [uid for uid, _ in users], clients


def _close(clients: list[Client]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    backend_service = start_backend(cpu=LOADGEN_CPU)
    backend = Backend(backend_service)
    results: dict[str, dict[str, float]] = {}
    common = {"SEND_QUEUE_SIZE": "4096", "LOG_LEVEL": "warning"}
    try:
        # 1 worker: the reference.
        gateway = start_gateway(backend.url, cpu=GATEWAY_CPU, env=common)
        try:
            ids, clients = await _connect(backend, gateway.port, args.members + args.senders)
            chat_id = await backend.chat(ids)
            results["1 worker"] = await _measure(clients[:args.senders],
                                                 clients[args.senders:], chat_id, [gateway],
                                                 args)
        finally:
            gateway.stop()
        # 2 workers: senders on worker 0, receivers counted on worker 1.
        gateway = start_gateway(backend.url, cpu=GATEWAY_CPU,
                                   env={**common, "WORKERS": "2"})
        try:
            await asyncio.sleep(1.0)
            ids, clients = await _connect(backend, gateway.port,
                                          3 * (args.members + args.senders))
            on_0 = [i for i, c in enumerate(clients) if _worker_of(c) == "0"][:args.senders]
            on_1 = [i for i, c in enumerate(clients) if _worker_of(c) == "1"][:args.members]
            chat_id = await backend.chat([ids[i] for i in on_0 + on_1])
            _close([c for i, c in enumerate(clients) if i not in set(on_0 + on_1)])
            results["2 workers, across"] = await _measure(
                [clients[i] for i in on_0], [clients[i] for i in on_1], chat_id, [gateway],
                args)
        finally:
            gateway.stop()
        # 2 hosts sharing Redis: senders on host A, receivers on host B.
        redis_service = start_redis(cpu=GATEWAY_CPU)
        url = f"redis://127.0.0.1:{redis_service.port}/0"
        host_a = start_gateway(backend.url, cpu=GATEWAY_CPU, env={**common, "REDIS_URL": url})
        host_b = start_gateway(backend.url, cpu=GATEWAY_CPU, env={**common, "REDIS_URL": url})
        try:
            await asyncio.sleep(1.5)
            sender_ids, senders = await _connect(backend, host_a.port, args.senders)
            receiver_ids, receivers = await _connect(backend, host_b.port, args.members)
            chat_id = await backend.chat(sender_ids + receiver_ids)
            results["2 hosts, Redis"] = await _measure(
                senders, receivers, chat_id, [host_a, host_b, redis_service], args)
        finally:
            host_a.stop()
            host_b.stop()
            redis_service.stop()
    finally:
        await backend.close()
        backend_service.stop()
    base = results["1 worker"]
    print(f"\n## scale-out: 1 chat, {args.members} receivers, {args.senders} senders x "
          f"{args.window} in flight, {args.duration:g} s; all gateway processes (and Redis) "
          f"on CPU {GATEWAY_CPU}, load generator and backend on CPU {LOADGEN_CPU}\n")
    print("| configuration | receivers | deliveries/s | µs CPU per delivery | vs 1 worker |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        ratio = row["µs CPU/delivery"] / base["µs CPU/delivery"]
        print(f"| {name} | {row['receivers']:,.0f} | {row['deliveries/s']:,.0f} | "
              f"{row['µs CPU/delivery']:.2f} | {ratio:.2f}x |")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.members, args.senders, args.window = 40, 2, 2
        args.duration, args.warmup = 1.0, 0.3
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
