"""Per-user streams: offsets, resuming, what is kept and for how long, and the memory a kept
event costs per receiver (over the compiled streams, or their pure-Python twin under
``GOGATE_NO_EXTENSIONS=1``)."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from itertools import count
from typing import Any

import pytest

from gogate.streams import StreamStore

TTL = 300.0
SIZE = 1000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def epochs() -> Any:
    numbers = count(1)
    return lambda: f"epoch-{next(numbers)}"


def event(number: int) -> bytes:
    return b'{"event":"new_message","data":{"id":%d,"text":"hello"}}' % number


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> StreamStore:
    return StreamStore(SIZE, TTL, clock=clock, new_epoch=epochs())


# --- offsets ----------------------------------------------------------------------------------


def test_each_receiver_with_a_stream_gets_its_next_offset(store: StreamStore) -> None:
    store.open(1)
    store.open(2)
    assert store.append([1, 2, 3], "new_message", event(1)) == {1: 1, 2: 1}
    assert store.append([2], "new_message", event(2)) == {2: 2}
    assert store.append([1, 2, 2, 1], "new_message", event(3)) == {1: 2, 2: 3}
    assert store.append(frozenset({1, 2, 3}), "new_message", event(4)) == {1: 3, 2: 4}
    assert store.position(1) == ("epoch-1", 3)
    assert store.position(2) == ("epoch-2", 4)
    assert 3 not in store  # an event for a user without a stream keeps nothing for them


def test_an_event_for_nobody_with_a_stream_is_not_kept(store: StreamStore) -> None:
    assert store.append([7, 8], "new_message", event(1)) == {}
    assert store.kept == 0


def test_a_new_stream_starts_at_zero_with_its_own_epoch(store: StreamStore) -> None:
    assert store.position(5) == ("epoch-1", 0)
    assert store.open(5) == ("epoch-1", 0)
    assert store.position(6) == ("epoch-2", 0)


def test_default_epochs_are_random_strings() -> None:
    store = StreamStore(10, 1.0)
    first, second = store.position(1)[0], store.position(2)[0]
    assert isinstance(first, str) and len(first) >= 12 and first != second


def test_settings_that_keep_nothing_are_refused() -> None:
    with pytest.raises(ValueError):
        StreamStore(0, 10.0)
    with pytest.raises(ValueError):
        StreamStore(10, 0.0)


# --- resuming ---------------------------------------------------------------------------------


def test_since_gives_every_missed_event_oldest_first_with_its_offset(store: StreamStore) -> None:
    epoch, _ = store.open(1)
    for number in range(1, 6):
        store.append([1], "new_message", event(number))
    assert store.since(1, epoch, 2) == [(3, event(3)), (4, event(4)), (5, event(5))]
    assert store.since(1, epoch, 0) == [(n, event(n)) for n in range(1, 6)]
    assert store.since(1, epoch, 5) == []


def test_since_cannot_recover_a_foreign_epoch_or_a_future_offset(store: StreamStore) -> None:
    epoch, _ = store.open(1)
    store.append([1], "new_message", event(1))
    assert store.since(1, "another-epoch", 0) is None
    assert store.since(1, epoch, 2) is None
    assert store.since(1, epoch, -1) is None
    assert store.since(2, epoch, 0) is None  # no stream at all


def test_since_cannot_recover_past_the_size_window(clock: Clock) -> None:
    store = StreamStore(3, TTL, clock=clock, new_epoch=epochs())
    epoch, _ = store.open(1)
    for number in range(1, 6):
        store.append([1], "new_message", event(number))
    assert store.since(1, epoch, 1) is None  # offset 2 is gone
    assert store.since(1, epoch, 2) == [(3, event(3)), (4, event(4)), (5, event(5))]


def test_events_older_than_the_ttl_are_not_replayed(store: StreamStore, clock: Clock) -> None:
    epoch, _ = store.open(1)
    store.append([1], "new_message", event(1))
    clock.now += 200
    store.append([1], "new_message", event(2))
    clock.now += 150  # the first event is 350 s old, the second 150 s
    assert store.since(1, epoch, 0) is None
    assert store.since(1, epoch, 1) == [(2, event(2))]
    assert store.position(1) == (epoch, 2)  # the offset stays, only the event went


def test_the_same_event_is_replayed_to_every_receiver(store: StreamStore) -> None:
    epochs_by_user = {user_id: store.open(user_id)[0] for user_id in (1, 2)}
    store.append([1], "new_message", event(1))
    store.append([1, 2], "new_message", event(2))
    first, second = store.since(1, epochs_by_user[1], 1), store.since(2, epochs_by_user[2], 0)
    assert first == [(2, event(2))]
    assert second == [(1, event(2))]
    assert first[0][1] is second[0][1]  # one event, stored once


# --- lifetime ---------------------------------------------------------------------------------


def test_a_stream_outlives_its_last_connection_by_the_ttl(store: StreamStore,
                                                         clock: Clock) -> None:
    epoch, _ = store.open(1)
    store.open(1)
    store.close(1)
    clock.now += TTL + 1
    store.prune()
    assert store.position(1) == (epoch, 0)  # one connection is still open
    store.close(1)
    clock.now += TTL - 1
    store.append([1], "new_message", event(1))  # kept while nobody is connected
    store.prune()
    assert store.since(1, epoch, 0) == [(1, event(1))]
    clock.now += 1
    store.prune()
    assert 1 not in store
    assert store.kept == 0
    assert store.open(1) == ("epoch-2", 0)
    assert store.append([1], "new_message", event(2)) == {1: 1}
    assert store.since(1, epoch, 1) is None


def test_reconnecting_within_the_ttl_keeps_the_stream(store: StreamStore, clock: Clock) -> None:
    epoch, _ = store.open(1)
    store.close(1)
    clock.now += TTL / 2
    store.open(1)
    clock.now += TTL
    store.prune()
    assert store.position(1) == (epoch, 0)
    store.close(1)
    clock.now += TTL / 2
    store.open(1)  # the expiry of the first close does not drop it either
    store.close(1)
    clock.now += TTL / 2 + 1
    store.prune()
    assert store.position(1) == (epoch, 0)


def test_a_stream_made_by_position_alone_expires(store: StreamStore, clock: Clock) -> None:
    store.position(1)
    clock.now += TTL
    store.prune()
    assert 1 not in store


def test_pruning_frees_expired_events(store: StreamStore, clock: Clock) -> None:
    for user_id in range(100):
        store.open(user_id)
    for number in range(50):
        store.append(range(100), "new_message", event(number))
        clock.now += 1
    assert store.kept == 50
    clock.now = 1000 + 25 + TTL - 0.5  # events of 1000 to 1024 are older than the TTL
    store.prune()
    assert store.kept == 25


def test_events_trimmed_by_size_are_freed_before_their_ttl(clock: Clock) -> None:
    store = StreamStore(10, TTL, clock=clock)
    store.open(1)
    gc.collect()
    tracemalloc.start()
    try:
        for number in range(10_000):
            store.append([1], "new_message", b'{"event":"x","data":"%d%s"}' % (number, b"a" * 1000))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert store.kept == 10
    assert used < 3_000_000  # about 2,000 events of 1 KB at most, not 10,000


def test_pruning_costs_what_expires_not_what_is_kept(clock: Clock) -> None:
    store = StreamStore(SIZE, TTL, clock=clock)
    for user_id in range(100_000):
        store.open(user_id)
    members = list(range(100))
    for number in range(10_000):
        store.append(members, "new_message", event(number))
    best = min(_timed(store.prune) for _ in range(5))
    # Walking 100,000 streams or 10,000 events would take several milliseconds.
    assert best < 0.001


def _timed(work: Any) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def test_the_store_agrees_with_a_plain_model() -> None:
    """Random opens, closes, events, resumes and the passing of time, compared with a model
    that keeps every event of every user in full."""
    rng = random.Random(9)
    clock = Clock()
    size, ttl = 5, 10.0
    store = StreamStore(size, ttl, clock=clock)
    model: dict[int, dict[str, Any]] = {}  # user → epoch, last, events, connections, expires
    for step in range(20_000):
        action = rng.random()
        user_id = rng.randrange(8)
        if action < 0.1:
            epoch, last = store.open(user_id)
            entry = model.setdefault(user_id, {"epoch": epoch, "last": 0, "events": [],
                                               "connections": 0, "expires": 0.0})
            assert (entry["epoch"], entry["last"]) == (epoch, last)
            entry["connections"] += 1
        elif action < 0.2:
            store.close(user_id)
            closing = model.get(user_id)
            if closing is not None and closing["connections"]:
                closing["connections"] -= 1
                if closing["connections"] == 0:
                    closing["expires"] = clock.now + ttl
        elif action < 0.6:
            receivers = rng.sample(range(8), rng.randrange(1, 5))
            got = store.append(receivers, "new_message", event(step))
            expected = {}
            for receiver in receivers:
                if receiver in model:
                    entry = model[receiver]
                    entry["last"] += 1
                    entry["events"].append((entry["last"], event(step), clock.now))
                    expected[receiver] = entry["last"]
            assert got == expected
        elif action < 0.85:
            found = model.get(user_id)
            epoch = found["epoch"] if found and rng.random() < 0.9 else "stale"
            last = found["last"] if found else 0
            offset = rng.randrange(-1, last + 3)
            assert store.since(user_id, epoch, offset) == _model_since(
                found, epoch, offset, size, clock.now - ttl)
        else:
            clock.now += rng.choice((0.5, 1.0, 3.0))
            store.prune()
            for gone in [u for u, e in model.items()
                         if not e["connections"] and e["expires"] <= clock.now]:
                del model[gone]
        assert len(store) == len(model)


def _model_since(entry: dict[str, Any] | None, epoch: str, offset: int, size: int,
                 horizon: float) -> list[tuple[int, bytes]] | None:
    if entry is None or entry["epoch"] != epoch or not 0 <= offset <= entry["last"]:
        return None
    kept = [(o, p) for o, p, at in entry["events"][-size:] if at > horizon]
    missed = [(o, p) for o, p in kept if o > offset]
    if len(missed) != entry["last"] - offset:
        return None
    return missed


# --- memory -----------------------------------------------------------------------------------


def test_a_receiver_costs_at_most_64_bytes_per_kept_event() -> None:
    """2,000 users in 20 chats of 100, 200 events per chat: 400,000 receiver slots. Everything
    the store holds, the shared events included, divided by the slots."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        payloads = [event(number) for number in range(20 * 200)]
        store = StreamStore(SIZE, TTL)
        for user_id in range(2000):
            store.open(user_id)
        chats = [list(range(chat * 100, chat * 100 + 100)) for chat in range(20)]
        for number, payload in enumerate(payloads):
            store.append(chats[number % 20], "new_message", payload)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    slots = 2000 * 200
    assert used / slots <= 64, f"{used / slots:.1f} bytes per receiver slot"
