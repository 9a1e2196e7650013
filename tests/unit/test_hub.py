"""The hub and the in-process broker: a connection enters with one of its user's slots and gives
it back when it leaves; a broadcast is encoded once and framed once (a stream event: once per
user, with the user's offset) and written to every receiver; a receiver that cannot keep up is
closed as a slow consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection

import msgspec
import pytest

from gogate.errors import Close
from gogate.events import StreamPosition
from gogate.hub import Grant, Hub, LocalBroker
from gogate.metrics import Metrics
from gogate.recovery import Recovery
from gogate_fast import Sink, build_frame


class Owner:
    """The connection side of a sink: what it was written, and why it was closed."""

    def __init__(self, user_id: int | None = None) -> None:
        self.written: list[bytes] = []
        self.closed: list[Close] = []
        self.user_id = user_id

    def close(self, reason: Close) -> None:
        self.closed.append(reason)


class Worker:
    """The node a LocalBroker serves: its deliveries go to the hub."""

    def __init__(self, recovery_ttl: float = 0.0, recovery_size: int = 1000) -> None:
        self.broker = LocalBroker(recovery_ttl, recovery_size)
        self.metrics = Metrics()
        self.hub = Hub(self.broker, self.metrics)
        self.recovery = Recovery(self.broker, self.metrics)

    async def enter(self, user_id: int, sink: Sink, limit: int = 0,
                    since: StreamPosition | None = None) -> Grant | None:
        """What the auth step does: enter the hub, then start from the grant."""
        grant = await self.hub.enter(user_id, sink, limit, since)
        if grant is not None:
            self.recovery.begin(sink, user_id, grant, since)
        return grant

    def deliver(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool,
                offsets: dict[int, int] | None = None) -> None:
        behind = self.hub.deliver(user_ids, event, payload, exclude_user, droppable, offsets)
        assert behind is None, "a lone worker's sinks never find a gap"

    def reset(self, user_id: int, epoch: str, offset: int) -> None:
        self.recovery.reset(self.hub.sinks(user_id), epoch, offset)

    def held(self, user_id: int) -> int:
        return self.hub.held(user_id)

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None:
        raise AssertionError("not asked of a lone worker's broker")

    def invalidate(self, chat_id: int) -> None:
        raise AssertionError("not asked of a lone worker's broker")

    def revoke(self, user_id: int, reason: str, at: float) -> int:
        raise AssertionError("not asked of a lone worker's broker")

    def learn_revocations(self, records: list[tuple[int, float]]) -> None:
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


@pytest.fixture
async def streams() -> AsyncIterator[Worker]:
    """A lone worker with recovery on."""
    node = Worker(recovery_ttl=300.0, recovery_size=5)
    await node.broker.start(node)
    yield node
    await node.broker.stop()


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
        assert await worker.enter(user, sink_of(owner))
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
    assert await worker.enter(1, slow_sink)
    assert await worker.enter(2, sink_of(fast))
    slow_sink.pause()
    for n in range(3):
        worker.broker.publish((1, 2), "new_message", b'{"n":%d}' % n, None, False)
    assert slow.closed == [Close.SLOW_CONSUMER]
    assert fast.closed == [] and len(fast.written) == 3


def decoded(frame: bytes) -> dict[str, object]:
    """The JSON object a short unmasked server frame carries."""
    assert frame[0] == 0x81 and frame[1] < 126 and len(frame) == 2 + frame[1]
    value: dict[str, object] = msgspec.json.decode(frame[2:])
    return value


def split(writes: list[bytes]) -> list[bytes]:
    """The short frames in what a sink wrote (several may leave in one write)."""
    data = b"".join(writes)
    frames = []
    while data:
        size = 2 + data[1]
        frames.append(data[:size])
        data = data[size:]
    return frames


async def test_a_connection_is_not_written_broadcasts_before_it_starts(worker: Worker) -> None:
    owner = Owner()
    sink = sink_of(owner)
    assert await worker.hub.enter(1, sink, limit=0)
    worker.broker.publish((1,), "new_message", b'{"event":"new_message","data":{}}', None,
                          False)
    assert owner.written == []  # its auth_success has not been written yet


async def test_stream_events_are_encoded_once_and_framed_once_per_user(streams: Worker
                                                                      ) -> None:
    phone, laptop, other = Owner(), Owner(), Owner()
    for user, owner in ((1, phone), (1, laptop), (2, other)):
        assert await streams.enter(user, sink_of(owner, capacity=10))
    payload = b'{"event":"new_message","data":{"id":1}}'
    streams.broker.publish((1, 2, 3), "new_message", payload, None, False)
    assert phone.written[0] is laptop.written[0]  # one frame for every device of the user
    assert decoded(phone.written[0]) == {"event": "new_message", "data": {"id": 1},
                                         "offset": 1}
    assert decoded(other.written[0])["offset"] == 1
    assert streams.broker.streams is not None and streams.broker.streams.kept == 1
    streams.broker.publish((1,), "new_message", payload, None, False)
    assert [decoded(f)["offset"] for f in laptop.written] == [1, 2]
    assert len(other.written) == 1
    # A typing event is not a stream event: one plain frame for everyone, nothing kept.
    typing = b'{"event":"user_typing","data":{}}'
    streams.broker.publish((1, 2), "user_typing", typing, None, True)
    assert phone.written[-1] is other.written[-1] == build_frame(typing)
    assert streams.broker.streams.kept == 2


async def test_a_resume_is_granted_the_missed_events_and_a_foreign_epoch_is_not(
        streams: Worker) -> None:
    first = Owner()
    sink = sink_of(first, capacity=10)
    grant = await streams.enter(1, sink)
    assert grant is not None and grant.epoch is not None and grant.offset == 0
    for n in range(3):
        streams.broker.publish((1,), "new_message", b'{"event":"m","data":%d}' % n, None,
                               False)
    sink.close()
    streams.hub.leave(1, sink)
    again = await streams.hub.enter(1, sink_of(Owner()), 0, StreamPosition(grant.epoch, 1))
    assert again is not None and again.recovered is True and again.offset == 3
    assert [offset for offset, _ in again.events] == [2, 3]
    foreign = await streams.hub.enter(1, sink_of(Owner()), 0, StreamPosition("other", 1))
    assert foreign is not None and foreign.recovered is False and not foreign.events
    above = await streams.hub.enter(1, sink_of(Owner()), 0, StreamPosition(grant.epoch, 4))
    assert above is not None and above.recovered is False


async def test_the_replay_goes_first_and_is_paced_by_the_socket(streams: Worker) -> None:
    grant = await streams.enter(1, sink_of(Owner()))
    assert grant is not None and grant.epoch is not None
    for n in range(5):
        streams.broker.publish((1,), "new_message", b'{"event":"m","data":%d}' % n, None,
                               False)
    late = Owner(1)
    sink = sink_of(late, capacity=1)  # a send queue of one frame: the replay is not in it
    sink.pause()
    since = StreamPosition(grant.epoch, 0)
    again = await streams.hub.enter(1, sink, 0, since)
    assert again is not None and again.recovered
    streams.recovery.begin(sink, 1, again, since)
    streams.broker.publish((1,), "new_message", b'{"event":"m","data":5}', None, False)
    assert late.written == [] and late.closed == []  # waits for the socket, never overflows
    sink.resume()
    await asyncio.sleep(0)
    assert [decoded(f)["offset"] for f in split(late.written)] == [1, 2, 3, 4, 5, 6]
    assert not sink.catching_up and sink.stream_last == 6
    streams.broker.publish((1,), "new_message", b'{"event":"m","data":6}', None, False)
    assert decoded(late.written[-1])["offset"] == 7


async def test_a_reset_tells_every_connection_its_new_position(streams: Worker) -> None:
    owners = [Owner(1), Owner(1)]
    sinks = [sink_of(owner) for owner in owners]
    for sink in sinks:
        assert await streams.enter(1, sink)
    streams.reset(1, "fresh", 0)
    for owner, sink in zip(owners, sinks, strict=True):
        assert decoded(owner.written[-1]) == {"event": "stream_reset",
                                              "data": {"epoch": "fresh", "offset": 0}}
        assert sink.epoch == "fresh" and sink.stream_last == 0


async def test_recovery_off_numbers_nothing(worker: Worker) -> None:
    owner = Owner()
    grant = await worker.enter(1, sink_of(owner), 0, StreamPosition("e", 0))
    assert grant == Grant(None, 0, False, ())
    worker.broker.publish((1,), "new_message", b'{"event":"m","data":{}}', None, False)
    assert decoded(owner.written[0]) == {"event": "m", "data": {}}
