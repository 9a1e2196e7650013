"""The hub and the in-process broker: a connection enters with one of its user's slots and gives
it back when it leaves; a broadcast is framed once and written to every receiver; a receiver
that cannot keep up is closed as a slow consumer."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from gogate.errors import Close
from gogate.hub import Hub, LocalBroker
from gogate.metrics import Metrics
from gogate_fast import Sink, build_frame


class Owner:
    """The connection side of a sink: what it was written, and why it was closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed: list[Close] = []

    def close(self, reason: Close) -> None:
        self.closed.append(reason)


class Worker:
    """The node a LocalBroker serves: its deliveries go to the hub."""

    def __init__(self) -> None:
        self.broker = LocalBroker()
        self.metrics = Metrics()
        self.hub = Hub(self.broker, self.metrics)

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        self.hub.deliver(user_ids, event, payload, exclude_user, droppable)

    def held(self, user_id: int) -> int:
        return self.hub.held(user_id)

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        raise AssertionError("not asked of a lone worker's broker")

    def invalidate(self, chat_id: int) -> None:
        raise AssertionError("not asked of a lone worker's broker")

    def collect(self) -> bytes:
        return b""

    def lost(self) -> None:
        raise AssertionError("a lone worker's broker is never lost")


def sink_of(owner: Owner, capacity: int = 4) -> Sink:
    return Sink(owner.written.append, capacity, 1 << 20, owner)


@pytest.fixture
async def worker() -> Worker:
    node = Worker()
    await node.broker.start(node)
    return node


async def test_publish_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError):
        LocalBroker().publish((1,), "x", b"{}", None, False)


async def test_enter_holds_the_limit_per_user_and_leave_gives_the_slot_back(
        worker: Worker) -> None:
    hub = worker.hub
    first, second, third = (sink_of(Owner()) for _ in range(3))
    assert await hub.enter(1, first, limit=2)
    assert await hub.enter(1, second, limit=2)
    assert not await hub.enter(1, third, limit=2)
    assert await hub.enter(2, third, limit=2)  # another user has slots of their own
    assert (hub.held(1), hub.held(2), hub.connections, hub.user_count) == (2, 1, 3, 2)
    hub.leave(1, first)
    hub.leave(1, first)  # twice: harmless
    assert hub.held(1) == 1
    assert await hub.enter(1, first, limit=2)
    for sink in (first, second, third):
        sink.close(flush=False)


async def test_unlimited_and_closed_sinks(worker: Worker) -> None:
    hub = worker.hub
    sinks = [sink_of(Owner()) for _ in range(5)]
    for sink in sinks:
        assert await hub.enter(7, sink, limit=0)
    assert hub.held(7) == 5
    closed = sink_of(Owner())
    closed.close(flush=False)
    assert await hub.enter(8, closed, limit=1)  # not refused, but not registered either
    assert 8 not in hub and hub.held(8) == 0
    hub.leave(9, closed)  # a user that never entered: harmless


async def test_publish_frames_once_for_every_receiver_but_the_excluded(worker: Worker) -> None:
    owners = {user: Owner() for user in (1, 2, 3)}
    for user, owner in owners.items():
        assert await worker.hub.enter(user, sink_of(owner), limit=0)
    payload = b'{"event":"user_typing","data":{}}'
    worker.broker.publish(frozenset({1, 2, 3, 99}), "user_typing", payload, 1, True)
    assert owners[1].written == []
    assert owners[2].written == owners[3].written == [build_frame(payload)]
    sample = worker.metrics.registry.get_sample_value("gogate_events_out_total",
                                                      {"event": "user_typing"})
    assert sample == 2


async def test_a_receiver_that_overflows_is_closed_as_slow_consumer(worker: Worker) -> None:
    slow, fast = Owner(), Owner()
    slow_sink = sink_of(slow, capacity=2)
    assert await worker.hub.enter(1, slow_sink, limit=0)
    assert await worker.hub.enter(2, sink_of(fast), limit=0)
    slow_sink.pause()
    for n in range(3):
        worker.broker.publish((1, 2), "new_message", b'{"n":%d}' % n, None, False)
    assert slow.closed == [Close.SLOW_CONSUMER]
    assert fast.closed == [] and len(fast.written) == 3
