"""What a broadcast costs Redis when two hosts share it: commands, bytes and Redis CPU per
event, and the memory its kept events take, with recovery on (``RECOVERY_TTL=300``) against
off (``RECOVERY_TTL=0``).

Two gateway hosts (one worker each) share one Redis; one chat of ``--members`` members has
half of them connected to each host. A sender on host A sends ``--events`` messages (8 in
flight); every message is one event to the chat, numbered in Redis for every member when
recovery is on, only published when it is off. Counted from Redis itself (``INFO
commandstats``, ``INFO stats``, ``INFO cpu``, ``MEMORY USAGE``) after a reset of its
statistics, so the figures are Redis' side of the cost alone.

    python -m bench.redis_cost                 # 100 members, 1,000 events
    python -m bench.redis_cost --smoke         # 10 members, 50 events: checks that it runs

The gateways and Redis run on CPU 0, the development backend and this load generator on CPU 1
(``--no-pin`` turns this off). Results go to ``bench/results/redis-cost-<UTC>.json`` (format
``gogate-bench/1``); ``--json PATH`` elsewhere; smoke runs write only when asked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import redis
import uvloop

from bench import resultsfile
from bench.harness import Backend, Client, open_clients
from bench.procs import raise_fd_limit, start_backend, start_gateway, start_redis

__all__ = ["main"]

IN_FLIGHT = 8  # messages the sender keeps unanswered
WARMUP = 5  # messages sent before counting: fills both hosts' member caches


class Sender:
    """Sends numbered messages to one chat from one client, ``IN_FLIGHT`` at a time, until
    ``target`` of them are acknowledged."""

    def __init__(self, client: Client, chat_id: int) -> None:
        self.client = client
        self.chat_id = chat_id
        self.sent = 0
        self.target = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client.on_ack = self._on_ack

    def _send(self) -> None:
        self.sent += 1
        self.client.send(b'{"event":"send_message","data":{"chat_id":%d,"text":"event %d"},'
                         b'"ref":%d}' % (self.chat_id, self.sent, self.sent))

    def _on_ack(self) -> None:
        if self.client.acks >= self.target and not self.done.done():
            self.done.set_result(None)
        elif self.sent < self.target:
            self._send()

    async def send(self, count: int, timeout: float) -> None:
        """Send ``count`` more messages and wait for all their acknowledgements."""
        self.target += count
        self.done = asyncio.get_running_loop().create_future()
        for _ in range(min(IN_FLIGHT, count)):
            self._send()
        await asyncio.wait_for(self.done, timeout)


def _key_bytes(r: redis.Redis, kind: str) -> int:
    return sum(r.memory_usage(key, samples=0) or 0
               for key in r.scan_iter(f"gogate:{kind}:*", count=1000))


async def measure(backend: Backend, ttl: str, members: int, events: int, pin: bool
                  ) -> dict[str, float]:
    """One run with ``RECOVERY_TTL=ttl``: Redis' counters per event."""
    gateway_cpu = 0 if pin else None
    redis_service = start_redis(cpu=gateway_cpu)
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_service.port}/0", "WORKERS": "1",
           "RECOVERY_TTL": ttl, "SEND_QUEUE_SIZE": "100000"}
    host_a = start_gateway(backend.url, env=env, cpu=gateway_cpu)
    host_b = start_gateway(backend.url, env=env, cpu=gateway_cpu)
    r = redis.Redis(port=redis_service.port)
    try:
        half = members // 2
        users = await backend.users(members)
        on_a, _ = await open_clients(host_a.port, [token for _, token in users[:half]])
        on_b, _ = await open_clients(host_b.port, [token for _, token in users[half:]])
        sender = Sender(on_a[0], await backend.chat([user for user, _ in users]))
        await sender.send(WARMUP, 30)
        await asyncio.sleep(1.0)
        r.config_resetstat()
        cpu = r.info("cpu")
        cpu_before = cpu["used_cpu_user"] + cpu["used_cpu_sys"]
        received_before = sum(client.received for client in on_b)
        started = time.perf_counter()
        await sender.send(events, 120)
        await asyncio.sleep(1.0)  # host B's deliveries of the last events
        wall = time.perf_counter() - started
        stats, cpu = r.info("stats"), r.info("cpu")
        calls = {name.removeprefix("cmdstat_"): int(value["calls"])
                 for name, value in r.info("commandstats").items()}
        redis_cpu = cpu["used_cpu_user"] + cpu["used_cpu_sys"] - cpu_before
        own = sum(v for k, v in calls.items() if k in ("evalsha", "eval", "publish"))
        inside = sum(v for k, v in calls.items() if k not in ("config", "info"))
        return {
            "events": events,
            "delivered on host B": sum(client.received for client in on_b) - received_before,
            "seconds": wall,
            "gateway commands/event": own / events,
            "commands in Redis/event": inside / events,
            "Redis CPU µs/event": redis_cpu / events * 1e6,
            "bytes into Redis/event": stats["total_net_input_bytes"] / events,
            "bytes out of Redis/event": stats["total_net_output_bytes"] / events,
            "kept event B": _key_bytes(r, "ev") / events,
            "per-user lists B/slot": _key_bytes(r, "sl") / (events * members),
            "stream heads B (total)": _key_bytes(r, "sm"),
        }
    finally:
        r.close()
        host_a.stop()
        host_b.stop()
        redis_service.stop()


def _cell(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


async def run(members: int, events: int, pin: bool) -> dict[str, dict[str, float]]:
    raise_fd_limit()
    backend_service = start_backend(cpu=1 if pin else None)
    backend = Backend(backend_service)
    try:
        return {f"RECOVERY_TTL={ttl}": await measure(backend, ttl, members, events, pin)
                for ttl in ("300", "0")}
    finally:
        await backend.close()
        backend_service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100, help="chat members, half per host")
    parser.add_argument("--events", type=int, default=1_000, help="messages counted")
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the table as JSON to PATH (default: "
                             "bench/results/redis-cost-<UTC time>.json, none with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.members, args.events = 10, 50
    pin = not args.no_pin and len(os.sched_getaffinity(0)) > 1
    if pin:
        os.sched_setaffinity(0, {1})
    results = uvloop.run(run(args.members, args.events, pin))
    title = (f"Redis cost per event: 2 hosts, 1 chat of {args.members:,} members (half per "
             f"host), {args.events:,} messages")
    columns = list(results)
    print(f"\n## {title}\n")
    print("| figure | " + " | ".join(columns) + " | on / off |")
    print("|---|" + "---|" * (len(columns) + 1))
    on, off = results[columns[0]], results[columns[1]]
    for name in on:
        ratio = f"{on[name] / off[name]:.2f}x" if off[name] else "—"
        print(f"| {name} | " + " | ".join(_cell(results[c][name]) for c in columns)
              + f" | {ratio} |")
    path = resultsfile.path_for("redis-cost", args.json, args.smoke)
    if path is not None:
        resultsfile.write(path, "bench.redis_cost", [
            {"name": "redis-cost", "variant": "", "title": title,
             "rows": [{"system": f"gogate {c}", "values": results[c]} for c in columns]}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
