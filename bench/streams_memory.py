"""Memory of the per-user resumable streams, measured on the gateway's own store
(:class:`gogate.streams.StreamStore` over :mod:`gogate_fast`, compiled unless
``GOGATE_NO_EXTENSIONS`` is set).

``--users`` users in chats of ``--members`` members (every user in one chat) each keep
``--events`` events: one event per chat per round, encoded once (~``--payload`` bytes, shaped
like a ``new_message``) and shared by the streams of all its receivers. A receiver slot is one
user's reference to one kept event (users x events of them). Reported: the process's RSS growth
and its share per slot, everything included (events, their bookkeeping, the streams); the
part of it that is per slot once the shared events are set apart (the events' encodings and
records, counted with ``sys.getsizeof``); optionally (``--trace``) the bytes tracemalloc
counts; the cost of appending an event per receiver; and the time to gather and frame one
user's last 1,000 events, as a resume does.

    python -m bench.streams_memory                 # 10,000 users x 1,000 kept events
    python -m bench.streams_memory --smoke         # a few thousand slots: checks that it runs
    GOGATE_NO_EXTENSIONS=1 python -m bench.streams_memory   # the pure-Python twin

Results go to ``bench/results/streams-memory-<UTC>.json`` (format ``gogate-bench/1``, see
``bench.plot``); ``--json PATH`` elsewhere; smoke runs write only when asked.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from array import array
from pathlib import Path

import gogate_fast
from bench import resultsfile
from gogate.streams import StreamStore
from gogate_fast import Kept, build_frame

__all__ = ["main"]

SLOT_BOUND = 64  # bytes a receiver slot may cost at most


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _payload(number: int, chat_id: int, size: int) -> bytes:
    """A ``new_message`` event of about ``size`` bytes, as the gateway keeps it."""
    head = (b'{"event":"new_message","data":{"id":%d,"chat_id":%d,"user":{"id":1,'
            b'"full_name":"Load User"},"type":"text","text":"' % (number, chat_id))
    tail = (b'","reply_to":null,"attachments":[],"reactions":[],"read_count":0,'
            b'"mentions":null,"created_at":"2026-01-01T00:00:00+00:00","edited_at":null,'
            b'"is_edited":false}}')
    return head + b"x" * max(1, size - len(head) - len(tail)) + tail


def _shared_bytes(store: StreamStore, user_id: int) -> float:
    """Bytes of one kept event that its receivers share: its encoding, its record, the empty
    receivers array's header, and its place in the store's log."""
    epoch, last = store.position(user_id)
    events = store.since(user_id, epoch, last - 1)
    assert events
    payload = events[0][1]
    kept = Kept("new_message", payload, 0.0)
    return (sys.getsizeof(payload) + sys.getsizeof(kept) + sys.getsizeof(array("q"))
            + 8)


def measure(users: int, members: int, events: int, payload_size: int, trace: bool
            ) -> dict[str, float]:
    chats = users // members
    if chats < 1 or users % members:
        raise SystemExit("--users must be a positive multiple of --members")
    # Each round's events are encoded before they are appended, outside the timed part, as
    # the gateway encodes an event before it is kept.
    gc.collect()
    if trace:
        tracemalloc.start()
    rss_before = _rss()
    traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
    store = StreamStore(events, 3600.0)
    for user_id in range(users):
        store.open(user_id)
    audiences = [frozenset(range(c * members, (c + 1) * members)) for c in range(chats)]
    appending = 0.0
    for round_number in range(events):
        encoded = [_payload(round_number * chats + c, c, payload_size) for c in range(chats)]
        started = time.perf_counter()
        for chat_id in range(chats):
            store.append(audiences[chat_id], "new_message", encoded[chat_id])
        appending += time.perf_counter() - started
    del encoded
    gc.collect()
    grown = _rss() - rss_before
    traced = tracemalloc.get_traced_memory()[0] - traced_before if trace else 0
    if trace:
        tracemalloc.stop()
    slots = users * events
    distinct = events * chats
    shared = _shared_bytes(store, 0)
    epoch, last = store.position(0)
    started = time.perf_counter()
    missed = store.since(0, epoch, max(0, last - 1000))
    assert missed is not None
    frames = [build_frame(payload, offset) for offset, payload in missed]
    replay_ms = (time.perf_counter() - started) * 1000
    assert len(store) == users and store.kept == distinct
    figures = {
        "users": users, "kept events/user": events, "receiver slots": slots,
        "distinct events": distinct, "payload B": len(_payload(0, 0, payload_size)),
        "RSS growth MB": grown / 2**20,
        "RSS B/slot": grown / slots,
        "shared B/event": shared,
        "RSS B/slot w/o shared events": (grown - distinct * shared) / slots,
        "append ns/receiver": appending / slots * 1e9,
        "replay ms": replay_ms,
        "replayed frames": len(frames),
    }
    if trace:
        figures["traced MB"] = traced / 2**20
        figures["traced B/slot"] = traced / slots
    return figures


def _cell(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=100, help="users per chat")
    parser.add_argument("--events", type=int, default=1_000, help="kept events per user")
    parser.add_argument("--payload", type=int, default=300, help="bytes per encoded event")
    parser.add_argument("--trace", action="store_true",
                        help="also count with tracemalloc (several times slower)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the table as JSON to PATH (default: "
                             "bench/results/streams-memory-<UTC time>.json, none with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.members, args.events = 500, 50, 50
    implementation = gogate_fast.IMPLEMENTATION
    figures = measure(args.users, args.members, args.events, args.payload, args.trace)
    title = (f"streams memory: {args.users:,} users in chats of {args.members}, "
             f"{args.events:,} kept events per user ({implementation} stream store)")
    print(f"# python {sys.version.split()[0]}; gogate_fast {implementation}")
    print(f"\n## {title}\n")
    print("| figure | value |\n|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {_cell(value)} |")
    within = figures["RSS B/slot w/o shared events"] <= SLOT_BOUND
    print(f"\nper receiver slot, the shared events set apart: "
          f"{figures['RSS B/slot w/o shared events']:.1f} B "
          f"({'within' if within else 'OVER'} the {SLOT_BOUND} B bound)")
    path = resultsfile.path_for("streams-memory", args.json, args.smoke)
    if path is not None:
        resultsfile.write(path, "bench.streams_memory", [
            {"name": "streams-memory", "variant": "", "title": title,
             "rows": [{"system": f"gogate ({implementation})", "values": figures}]}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
