"""Load generator for gogate: picows clients speaking the whole BuzzChat protocol.

It starts the development backend and the gateway itself (and the reference picows hub, and
any baseline command, for comparison), creates users, chats and tokens through the development
backend, and measures:

``fanout``   C=1 chat x M members, S senders each keeping W messages in flight: deliveries/s
             and gateway CPU per delivery at saturation; then p50/p99/p999 latency and gateway
             CPU at a fixed delivery rate; loss.
``idle``     N authenticated idle connections: gateway RSS growth per connection.
``connect``  N connections, 256 handshakes in flight, each authenticated: rate, handshake
             latency, gateway CPU and backend calls per connection; through the backend, with
             local JWT verification, and with a warm validation cache (``bench.storms``).
``storm``    N connected are dropped at once and all reconnect: time until all are back,
             validate calls, and the delivery p99 of connections that stayed open, during the
             storm against before it (``bench.storms``).
``resume``   N connected in chats are dropped at once, their chats go on, and all resume
             with ``since``: time until every client has caught up, events replayed, and
             backend calls (``bench.resume``; gogate only: no baseline runs it).
``typing``   a typing storm (T typists x K events in one second in one chat): member-list
             calls at the backend and user_typing deliveries per receiver.

Every scenario runs gogate (compiled hot path) and, where it applies, gogate with the
pure-Python twin and the bare picows hub of ``bench.refhub``, in one run, and prints a table.
``--baseline NAME=CMD`` (repeatable) runs any other gateway command beside them, and every
figure is then also given as a ratio to each baseline's; ``NAME=legacy:CMD`` gives that command
a development backend answering in the original Go gateway's shapes. The command gets its
port, backend URL and key as environment variables (``PORT``, ``BACKEND_API_URL``,
``INTERNAL_API_KEY``, ``INTERNAL_PORT``, ``HOST``) and as the placeholders ``{port}``,
``{backend}``, ``{key}``, ``{internal_port}``; see ``bench.harness``. Without a baseline the
ratios are against the picows hub, else the pure twin.

Gateways under synthetic load get ``RATE_LIMIT=0``, ``MAX_CONNECTIONS_PER_USER=0`` and
``LOG_LEVEL=warning``, and otherwise their defaults. gogate runs as the installed package
(``<this interpreter> -m gogate``) from an empty working directory. The gateway (and every
baseline) is pinned to CPU 0; the load generator and the backend share CPU 1 (``--no-pin``
turns pinning off). The load generator reports its own CPU share (and, for connections, the
backend's): near 100 % together, CPU 1, not the gateway, is the bottleneck, and the gateway's
CPU per event is the figure to compare. Every table is also written as JSON to
``bench/results/`` (``--json PATH`` elsewhere; smoke runs write only when asked).

    python -m bench.loadgen fanout --members 1000 --duration 5
    python -m bench.loadgen connect storm --baseline go=legacy:/path/to/original/gogate
    python -m bench.loadgen storm --variants rate --connect-rate 1000
    python -m bench.loadgen all --smoke          # tiny sizes: checks that everything runs
    python -m bench.plot                         # charts of bench/results/*.json
    py-spy record -o fanout.svg --pid <gateway pid>   # while a scenario runs (see PROFILING.md)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import uvloop

from bench import resultsfile
from bench.harness import (
    GATEWAY_CPU,
    LOADGEN_CPU,
    Backend,
    Baseline,
    Client,
    Meter,
    Row,
    System,
    close_clients,
    make_system,
    median_row,
    open_clients,
    parse_baseline,
    percentile,
    print_table,
)
from bench.procs import StartupError, raise_fd_limit, start_backend
from bench.resume import RESUME_VARIANTS
from bench.resume import resume as resume_scenario
from bench.storms import CONNECT_VARIANTS, STORM_VARIANTS, Variant
from bench.storms import connect as connect_scenario
from bench.storms import storm as storm_scenario

__all__ = ["main"]


def _profile_path(args: argparse.Namespace, name: str, system: System) -> str | None:
    if not args.profile:
        return None
    os.makedirs(args.profile, exist_ok=True)
    return os.path.join(args.profile, f"{name}-{system.name}.txt")


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


async def _population(system: System, members: int, senders: int
                      ) -> tuple[int, list[Client], list[Client]]:
    users = await system.backend.users(members + senders)
    chat_id = await system.backend.chat([uid for uid, _ in users])
    tokens: list[str | None] = [t if system.protocol else None for _, t in users]
    clients, _ = await open_clients(system.server.port, tokens, joined=system.joined)
    return chat_id, clients[:members], clients[members:]


async def fanout(system: System, args: argparse.Namespace, variant: str) -> Row:
    """Saturation with a bounded in-flight window, then a fixed delivery rate."""
    row = Row(system.name)
    chat_id, receivers, senders = await _population(system, args.members, args.senders)
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
        if not system.protocol or system.joined:  # no ack: a sender's own copy stands for it
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


async def idle(system: System, args: argparse.Namespace, variant: str) -> Row:
    row = Row(system.name)
    users = await system.backend.users(args.connections)
    warm, _ = await open_clients(system.server.port,
                                 [users[0][1] if system.protocol else None],
                                 joined=system.joined)
    await asyncio.sleep(0.5)
    before = system.server.rss_bytes()
    tokens: list[str | None] = [t if system.protocol else None for _, t in users[1:]]
    clients, _ = await open_clients(system.server.port, tokens, joined=system.joined)
    await asyncio.sleep(2.0)
    after = system.server.rss_bytes()
    row.values["connections"] = len(clients)
    row.values["KB/connection"] = (after - before) / max(1, len(clients)) / 1024
    row.values["gw RSS MB"] = after / 2**20
    close_clients(clients + warm)
    return row


async def typing(system: System, args: argparse.Namespace, variant: str) -> Row:
    row = Row(system.name)
    chat_id, receivers, typists = await _population(system, args.members, args.typists)
    backend = system.backend
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



_VALIDATES = "validate/connect"  # the column both connection scenarios report

ScenarioRun = Callable[[System, argparse.Namespace, str], Awaitable[Row]]


@dataclass(frozen=True)
class Scenario:
    run: ScenarioRun
    systems: list[str]  # run by default, besides the baselines
    variants: dict[str, Variant] | None = None
    #: False: the baselines are skipped (they lack what the scenario measures).
    baselines: bool = True


SCENARIOS = {
    "fanout": Scenario(fanout, ["gogate", "gogate-pure", "picows-hub", "picows-hub-uv"]),
    "idle": Scenario(idle, ["gogate", "gogate-pure", "picows-hub", "picows-hub-uv"]),
    "connect": Scenario(connect_scenario, ["gogate"], CONNECT_VARIANTS),
    "storm": Scenario(storm_scenario, ["gogate"], STORM_VARIANTS),
    "resume": Scenario(resume_scenario, ["gogate"], RESUME_VARIANTS, baselines=False),
    "typing": Scenario(typing, ["gogate"]),
}


def _title(name: str, args: argparse.Namespace) -> str:
    return {
        "fanout": f"fanout: 1 chat x {args.members} members, {args.senders} senders x "
                  f"{args.window} in flight, {args.duration:g} s; fixed rate "
                  f"{args.rate:,.0f} deliveries/s",
        "idle": f"idle: {args.connections:,} authenticated connections",
        "connect": f"connect: {args.connections:,} connections + auth, {args.concurrency} "
                   "at a time",
        "storm": f"storm: {args.connections:,} dropped at once and reconnecting, "
                 f"{args.storm_concurrency} at a time; {args.open} open connections receive "
                 f"{args.storm_rate:g} messages/s",
        "resume": f"resume: {args.resume_chats * args.resume_members:,} clients in "
                  f"{args.resume_chats} chats x {args.resume_members} members dropped at once; "
                  f"{args.resume_messages} messages per chat sent meanwhile; all resume with "
                  f"since, {args.storm_concurrency} at a time",
        "typing": f"typing storm: {args.typists} typists x {args.events} events in 1 s, "
                  f"{args.members} receivers",
    }[name]


class Run:
    """One invocation: the backends, the baselines, and the settings every gateway gets."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.baselines: dict[str, Baseline] = {b.name: b for b in args.baseline}
        self.backends: dict[bool, Backend] = {}
        self.results: list[dict[str, Any]] = []  # one entry per printed table
        self.gateway_env = {"SEND_QUEUE_SIZE": str(args.send_queue)}

    async def start(self) -> None:
        args = self.args
        cpu = {"gateway": GATEWAY_CPU, "loadgen": LOADGEN_CPU}.get(args.backend_cpu)
        cpu = cpu if args.pin else None
        self.backends[False] = Backend(start_backend(cpu=cpu))
        if any(b.legacy for b in self.baselines.values()):
            self.backends[True] = Backend(start_backend(cpu=cpu, extra=["--legacy-shapes"]),
                                          legacy=True)
        for backend in self.backends.values():
            await backend.fetch_public_key()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()

    def variant_env(self, variant: Variant) -> dict[str, str] | None:
        """The variant's gateway settings, or None when this run cannot provide them.
        ``{public_key}`` is left for ``make_system``: each backend has its own key."""
        if any(v == "{public_key}" for v in variant.env.values()) \
                and self.backends[False].public_key is None:
            return None
        rate = f"{self.args.connect_rate:g}"
        return {k: v.replace("{connect_rate}", rate) for k, v in variant.env.items()}

    async def scenario(self, name: str) -> None:
        args = self.args
        scenario = SCENARIOS[name]
        chosen = [s for s in scenario.systems if s in args.systems] if args.systems \
            else list(scenario.systems)
        if scenario.baselines:
            chosen += list(self.baselines)
        variants = scenario.variants or {"": Variant("", {})}
        for key in args.variants or list(variants):
            if key not in variants:
                continue
            variant = variants[key]
            env = self.variant_env(variant)
            label = variant.label.replace("{connect_rate}", f"{args.connect_rate:g}")
            title = _title(name, args) + (f" — {label}" if label else "")
            if env is None:
                print(f"\n## {title}\n\nskipped: the development backend publishes no public "
                      "key (GET /api/dev/public-key), so there is nothing to verify "
                      "tokens with.")
                continue
            rows, notes = await self._measure(scenario, key, chosen,
                                              {**self.gateway_env, **env})
            if self.baselines and not scenario.baselines:
                notes.append(f"baselines not run ({', '.join(self.baselines)}): this scenario "
                             "measures resumable streams, which they do not have")
            if "JWT_PUBLIC_KEY" in env:
                notes += [f"{row.system} made {row.values[_VALIDATES]:.2f} validate calls per "
                          "connection: it verified tokens through the backend, not locally"
                          for row in rows if row.system not in self.baselines
                          and row.values.get(_VALIDATES, 0) > 0]
            self.results.append({"name": name, "variant": key, "title": title, "rows": [
                {"system": r.system,
                 "values": {k: (None if v != v else v) for k, v in r.values.items()}}
                for r in rows]})
            baselines = list(self.baselines) or (
                ["picows-hub"] if "picows-hub" in chosen else
                ["gogate-pure"] if "gogate-pure" in chosen else [])
            print_table(title, rows, [b for b in baselines if any(r.system == b
                                                                   for r in rows)],
                        args.repeat, notes)

    async def _measure(self, scenario: Scenario, variant: str, chosen: list[str],
                       env: dict[str, str]) -> tuple[list[Row], list[str]]:
        runs: dict[str, list[Row]] = {}
        notes: list[str] = []
        for _ in range(self.args.repeat):  # systems interleaved, so drift hits them alike
            for name in chosen:
                try:
                    system = make_system(name, self.backends, self.baselines, self.args.pin,
                                         env)
                except StartupError as error:
                    notes.append(f"{name} did not start with {env}: "
                                 f"{str(error).splitlines()[-1] if str(error) else error}")
                    continue
                try:
                    runs.setdefault(name, []).append(
                        await scenario.run(system, self.args, variant))
                finally:
                    system.stop()
        return [median_row(rows) for rows in runs.values()], notes


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    if args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    print(f"# gogate load benchmarks: loop uvloop {version('uvloop')}, python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          + (f"gateway pinned to CPU {GATEWAY_CPU}, load generator to CPU {LOADGEN_CPU}, "
             f"development backend: {args.backend_cpu}" if args.pin else "no pinning"))
    for baseline in args.baseline:
        print(f"# baseline {baseline.name}: {baseline.command}"
              + (" (development backend in the original's shapes)" if baseline.legacy else ""))
    session = Run(args)
    try:
        await session.start()
        names = [n for n in SCENARIOS if n != "typing"] + ["typing"] \
            if "all" in args.scenario else args.scenario
        for name in names:
            await session.scenario(name)
    finally:
        await session.close()
    path = resultsfile.path_for("loadgen", args.json, args.smoke)
    if path is not None:
        resultsfile.write(path, "bench.loadgen", session.results, session.baselines,
                          uvloop=version("uvloop"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="+", choices=[*SCENARIOS, "all"])
    parser.add_argument("--systems", nargs="*", default=None,
                        help="subset of gogate, gogate-pure, picows-hub, picows-hub-uv")
    parser.add_argument("--baseline", action="append", type=parse_baseline, default=[],
                        metavar="NAME=[legacy:]CMD",
                        help="another gateway command to measure in the same run "
                             "(repeatable; see the module docstring)")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="connect: backend, jwt, warm; storm: backend, jwt, rate; "
                             "resume: backend, jwt (default: all)")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--window", type=int, default=4, help="messages in flight per sender")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=20000.0, help="deliveries/s, fixed rate")
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=256,
                        help="handshakes in flight while connecting")
    parser.add_argument("--open", type=int, default=100,
                        help="storm: connections that stay open and receive messages")
    parser.add_argument("--storm-rate", type=float, default=20.0,
                        help="storm: messages/s sent to the open connections' chat")
    parser.add_argument("--storm-concurrency", type=int, default=1000,
                        help="storm: reconnecting handshakes in flight")
    parser.add_argument("--storm-timeout", type=float, default=60.0,
                        help="storm: seconds after which a client stops retrying")
    parser.add_argument("--before", type=float, default=3.0,
                        help="storm: seconds of delivery latency measured before the drop")
    parser.add_argument("--connect-rate", type=float, default=1000.0,
                        help="storm, variant rate: MAX_CONNECT_RATE of the gateway")
    parser.add_argument("--resume-chats", type=int, default=100,
                        help="resume: chats of dropped clients")
    parser.add_argument("--resume-members", type=int, default=100,
                        help="resume: dropped clients per chat (plus one sender)")
    parser.add_argument("--resume-messages", type=int, default=50,
                        help="resume: messages sent to each chat while its members are away")
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
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the tables as JSON to PATH (default: "
                             "bench/results/loadgen-<UTC time>.json, none with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: check that the scenarios run and report figures")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.members, args.senders, args.window = 50, 2, 2
        args.duration, args.warmup, args.rate = 1.0, 0.3, 2000.0
        args.connections, args.concurrency = 200, 50
        args.open, args.storm_concurrency, args.before, args.storm_timeout = 20, 100, 0.5, 20.0
        args.typists, args.events = 10, 5
        args.resume_chats, args.resume_members, args.resume_messages = 4, 50, 5
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
