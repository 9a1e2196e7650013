"""The hot path, ``gogate_fast``: server frames, per-connection sinks (collected writes, the
bounded send ring and its shedding), the flusher and its write delay, and fan-out, with stream
events framed per user with the user's offset and written to each sink once and in order.

Every test runs against both implementations, the pure-Python twin and the compiled module; a
missing compiled build fails its half instead of being skipped. The two are also driven through
the same long random sequences of operations and must write the same bytes.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"gogate_fast.{name}")
    except ImportError as exc:
        pytest.fail(f"the compiled hot path is not built ({exc}): "
                    "run `python setup.py build_ext --inplace`")


@pytest.fixture(params=["_pure", "_fast"], ids=["pure", "compiled"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every sink, ring and queued frame a test made is gone once it has been collected."""
    gc.collect()
    before = {name: _load(name).stats() for name in ("_pure", "_fast")}
    yield
    gc.collect()
    assert {name: _load(name).stats() for name in ("_pure", "_fast")} == before


class Writer:
    """A transport's write side: records every bytes object it is given (a sink may join
    several frames into one write)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)

    @property
    def data(self) -> bytes:
        """Everything written, in order, as the peer would read it."""
        return b"".join(self.frames)


def paused_sink(impl: ModuleType, capacity: int = 100, max_bytes: int = 1 << 20
                ) -> tuple[Any, Writer]:
    writer = Writer()
    sink = impl.Sink(writer, capacity, max_bytes)
    sink.pause()
    return sink, writer


def queued(impl: ModuleType) -> int:
    """Frames waiting in the send rings of every sink of ``impl``."""
    count: int = impl.stats()["queued"]
    return count


# --- build_frame ---------------------------------------------------------------------------


def decode_header(frame: bytes) -> tuple[int, bool, int, int]:
    """``(first byte, masked, payload length, header length)`` per RFC 6455 section 5.2."""
    first, second = frame[0], frame[1]
    masked = bool(second & 0x80)
    length = second & 0x7F
    offset = 2
    if length == 126:
        length = int.from_bytes(frame[2:4], "big")
        offset = 4
    elif length == 127:
        length = int.from_bytes(frame[2:10], "big")
        offset = 10
    return first, masked, length, offset


@pytest.mark.parametrize(("size", "header_len", "length_byte"), [
    (0, 2, 0), (1, 2, 1), (125, 2, 125), (126, 4, 126), (65535, 4, 126), (65536, 10, 127),
    (200_000, 10, 127),
])
def test_build_frame_header(impl: ModuleType, size: int, header_len: int,
                            length_byte: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = impl.build_frame(payload)
    assert isinstance(frame, bytes)
    first, masked, length, offset = decode_header(frame)
    assert first == 0x81  # FIN + text opcode, no reserved bits
    assert not masked  # server frames are never masked
    assert frame[1] & 0x7F == length_byte
    assert offset == header_len
    assert length == size
    assert len(frame) == header_len + size
    assert frame[offset:] == payload


def test_build_frame_minimal_length_encoding(impl: ModuleType) -> None:
    # RFC 6455: the minimal number of bytes must be used for the length.
    assert impl.build_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert impl.build_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert impl.build_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")


def test_build_frame_json_payload(impl: ModuleType) -> None:
    payload = '{"event":"x","data":{"t":"héllo"}}'.encode()
    assert impl.build_frame(payload) == bytes((0x81, len(payload))) + payload


# --- Sink: writing through and the send ring -----------------------------------------------


def test_writes_through_while_not_paused(impl: ModuleType) -> None:
    writer = Writer()
    sink = impl.Sink(writer, 2, 10)
    frames = [b"a" * 8, b"b" * 8, b"c" * 8, b"d" * 8]  # more than capacity and max_bytes
    for f in frames:
        assert sink.send(f) is True
    assert writer.frames == frames
    assert all(a is b for a, b in zip(writer.frames, frames, strict=True))
    assert queued(impl) == 0


def test_queues_while_paused_and_resume_writes_in_order(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl)
    frames = [b"1", b"22", b"333"]
    for i, f in enumerate(frames):
        assert sink.send(f, droppable=i == 1) is True
    assert writer.frames == []
    assert queued(impl) == 3
    assert sink.queued_bytes == 6
    sink.resume()
    assert writer.frames == [b"".join(frames)]  # the whole ring in one write
    assert queued(impl) == 0
    assert sink.queued_bytes == 0
    assert sink.send(b"4") is True
    assert writer.frames[-1] == b"4"


def test_send_after_resume_goes_after_the_queue(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl)
    sink.send(b"a")
    sink.send(b"b")
    sink.resume()
    sink.send(b"c")
    assert writer.data == b"abc"


def test_pause_during_the_resume_write_queues_what_follows(impl: ModuleType) -> None:
    written: list[bytes] = []
    sink: Any = None

    def write(data: bytes) -> None:
        written.append(data)
        sink.pause()  # the transport passed its high-water mark during this write

    sink = impl.Sink(write, 100, 1 << 20)
    sink.pause()
    for f in (b"A", b"B", b"C", b"D", b"E"):
        sink.send(f)
    sink.resume()
    assert written == [b"ABCDE"]  # the whole queue, in order
    assert queued(impl) == 0
    assert sink.paused
    sink.send(b"Z")  # paused again: queued, not written
    assert queued(impl) == 1
    assert written == [b"ABCDE"]
    sink.resume()
    assert b"".join(written) == b"ABCDEZ"


def test_the_ring_wraps_around_in_order(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=3)
    sink.send(b"t1", droppable=True)
    sink.send(b"m1")
    sink.send(b"t2", droppable=True)
    assert sink.send(b"m2") is True  # sheds t1; the ring's start moves past it
    assert sink.send(b"m3") is True  # sheds t2, the frame now in the middle
    assert sink.send(b"m4") is False
    sink.resume()
    assert writer.data == b"m1m2m3"


def test_capacity_overflow_refuses_non_droppable(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=3)
    for f in (b"a", b"b", b"c"):
        assert sink.send(f) is True
    assert sink.send(b"d") is False
    sink.resume()
    assert writer.data == b"abc"


def test_droppable_newcomer_into_full_queue_is_dropped(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=3)
    for f in (b"a", b"b", b"c"):
        sink.send(f)
    assert sink.send(b"typing", droppable=True) is True
    assert queued(impl) == 3
    sink.resume()
    assert writer.data == b"abc"


def test_oldest_droppable_shed_for_non_droppable(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=4)
    sink.send(b"m1")
    sink.send(b"t1", droppable=True)
    sink.send(b"m2")
    sink.send(b"t2", droppable=True)
    assert sink.send(b"m3") is True
    assert queued(impl) == 4
    assert sink.send(b"m4") is True  # sheds t2, the last droppable
    assert sink.send(b"m5") is False  # nothing left to shed
    assert queued(impl) == 4
    sink.resume()
    assert writer.data == b"m1m2m3m4"


def test_droppable_shed_only_as_needed(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=3)
    sink.send(b"t1", droppable=True)
    sink.send(b"t2", droppable=True)
    sink.send(b"t3", droppable=True)
    assert sink.send(b"m1") is True
    assert queued(impl) == 3
    sink.resume()
    assert writer.data == b"t2t3m1"


def test_nothing_is_shed_when_the_frame_cannot_fit(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=10, max_bytes=10)
    sink.send(b"tt", droppable=True)
    sink.send(b"mmmmmm")
    assert sink.send(b"nnnnnnn") is False  # shedding tt would not make room for 7 bytes
    assert sink.queued_bytes == 8
    sink.resume()
    assert writer.data == b"ttmmmmmm"


def test_byte_bound_refuses_non_droppable(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=100, max_bytes=10)
    assert sink.send(b"1234") is True
    assert sink.send(b"5678") is True
    assert sink.send(b"abc") is False  # 11 bytes would not fit
    assert sink.send(b"ab") is True  # exactly 10 fits
    assert sink.queued_bytes == 10
    sink.resume()
    assert writer.data == b"12345678ab"


def test_byte_bound_sheds_droppable_first(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=100, max_bytes=10)
    sink.send(b"tttt", droppable=True)
    sink.send(b"mmmm")
    assert sink.send(b"xxxxx", droppable=True) is True  # droppable newcomer: dropped
    assert sink.queued_bytes == 8
    assert sink.send(b"nnnn") is True  # sheds the oldest droppable to fit
    assert sink.queued_bytes == 8
    sink.resume()
    assert writer.data == b"mmmmnnnn"


def test_byte_count_returns_to_zero_after_shedding(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=2, max_bytes=100)
    sink.send(b"t" * 10, droppable=True)
    sink.send(b"m" * 20)
    sink.send(b"n" * 30)  # sheds the droppable frame
    sink.resume()
    assert queued(impl) == 0
    assert sink.queued_bytes == 0
    assert writer.data == b"m" * 20 + b"n" * 30


def test_frame_larger_than_max_bytes_while_paused(impl: ModuleType) -> None:
    sink, _ = paused_sink(impl, capacity=10, max_bytes=4)
    assert sink.send(b"12345") is False
    assert sink.send(b"12345", droppable=True) is True
    assert queued(impl) == 0
    assert impl.stats()["rings"] == 0  # nothing was queued: no ring was allocated


def test_close_discards_and_further_sends_are_noops(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=2)
    sink.send(b"a")
    sink.send(b"b")
    sink.close()
    assert sink.closed
    assert queued(impl) == 0
    assert sink.queued_bytes == 0
    assert sink.send(b"c") is True  # no overflow reported for a closed sink
    sink.resume()
    assert writer.frames == []
    open_sink = impl.Sink(writer, 2, 10)
    open_sink.close()
    open_sink.send(b"d")
    assert writer.frames == []


def test_sink_refuses_non_positive_bounds(impl: ModuleType) -> None:
    for capacity, max_bytes in ((0, 10), (10, 0)):
        with pytest.raises(ValueError):
            impl.Sink(Writer(), capacity, max_bytes)


def test_sink_owner(impl: ModuleType) -> None:
    owner = object()
    assert impl.Sink(Writer(), 1, 1, owner).owner is owner


def test_leak_counters_return_to_zero(impl: ModuleType) -> None:
    before = impl.stats()
    sinks = [impl.Sink(Writer(), 4, 1 << 20) for _ in range(10)]
    for sink in sinks:
        sink.pause()
        sink.send(b"queued")
        sink.send(b"twice")
    during = impl.stats()
    assert during["sinks"] == before["sinks"] + 10
    assert during["rings"] == before["rings"] + 10
    assert during["queued"] == before["queued"] + 20
    for sink in sinks[:5]:
        sink.resume()  # the ring is released once drained
    assert impl.stats()["rings"] == before["rings"] + 5
    assert impl.stats()["queued"] == before["queued"] + 10
    del sinks, sink
    gc.collect()
    assert impl.stats() == before


# --- the Flusher: one write per sink per loop iteration, or per write delay ------------------


class Scheduler:
    """The loop's ``call_soon`` and ``call_later``, run by hand: callbacks wait until
    ``run()``; ``delays`` records the delay of each ``call_later``."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.delays: list[float] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.delays.append(delay)
        self.callbacks.append(callback)

    def run(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def coalescing_sink(impl: ModuleType, capacity: int = 100
                    ) -> tuple[Any, Writer, Scheduler]:
    scheduler = Scheduler()
    flusher = impl.Flusher(scheduler)
    writer = Writer()
    return impl.Sink(writer, capacity, 1 << 20, None, flusher), writer, scheduler


def test_frames_of_one_iteration_leave_in_one_write(impl: ModuleType) -> None:
    sink, writer, scheduler = coalescing_sink(impl)
    for f in (b"one", b"two", b"three"):
        assert sink.send(f) is True
    assert writer.frames == []  # nothing written inside the iteration
    assert len(scheduler.callbacks) == 1
    scheduler.run()
    assert writer.frames == [b"onetwothree"]
    sink.send(b"four")
    scheduler.run()
    assert writer.frames == [b"onetwothree", b"four"]


def test_one_flush_is_scheduled_for_many_sinks(impl: ModuleType) -> None:
    scheduler = Scheduler()
    flusher = impl.Flusher(scheduler)
    writers = [Writer() for _ in range(50)]
    sinks = [impl.Sink(w, 10, 1 << 20, None, flusher) for w in writers]
    frame = impl.build_frame(b'{"event":"x","data":{}}')
    assert impl.deliver({i: [s] for i, s in enumerate(sinks)}, range(50), None, frame) \
        == (50, None, None)
    assert len(scheduler.callbacks) == 1
    assert all(w.frames == [] for w in writers)
    scheduler.run()
    written = [w.frames for w in writers]
    assert all(len(frames) == 1 for frames in written)
    assert all(frames[0] is written[0][0] for frames in written)  # one frame, not copied


def test_a_sink_that_collected_capacity_frames_writes_them_at_once(impl: ModuleType) -> None:
    sink, writer, scheduler = coalescing_sink(impl, capacity=3)
    sink.send(b"a")
    sink.send(b"b")
    assert writer.frames == []
    sink.send(b"c")
    assert writer.frames == [b"abc"]
    sink.send(b"d")  # collected again; the flush already scheduled writes it
    assert len(scheduler.callbacks) == 1
    scheduler.run()
    assert writer.frames == [b"abc", b"d"]


def test_an_early_flush_does_not_schedule_a_second_one(impl: ModuleType) -> None:
    sink, writer, scheduler = coalescing_sink(impl)
    sink.send(b"a")
    sink.flush()  # before a close frame, say
    sink.send(b"b")
    assert writer.frames == [b"a"]
    assert len(scheduler.callbacks) == 1
    scheduler.run()
    assert writer.frames == [b"a", b"b"]


def test_resume_writes_coalesced_frames_before_the_queue(impl: ModuleType) -> None:
    sink, writer, scheduler = coalescing_sink(impl)
    sink.send(b"a")  # collected, not yet written
    sink.pause()
    sink.send(b"b")  # queued behind it
    sink.resume()
    assert writer.frames == [b"a", b"b"]
    scheduler.run()
    assert writer.frames == [b"a", b"b"]


def test_close_writes_coalesced_frames_unless_told_not_to(impl: ModuleType) -> None:
    sink, writer, scheduler = coalescing_sink(impl)
    sink.send(b"last words")
    sink.close()
    assert writer.data == b"last words"  # before the close frame the caller sends next
    scheduler.run()
    assert writer.data == b"last words"
    sink2, writer2, scheduler2 = coalescing_sink(impl)
    sink2.send(b"lost")
    sink2.close(flush=False)
    scheduler2.run()
    assert writer2.frames == []


def test_write_delay_collects_across_iterations(impl: ModuleType) -> None:
    scheduler = Scheduler()
    flusher = impl.Flusher(scheduler, 0.005, scheduler.later)
    writers = [Writer(), Writer()]
    sinks = [impl.Sink(w, 100, 1 << 20, None, flusher) for w in writers]
    sinks[0].send(b"a")
    sinks[1].send(b"x")
    sinks[0].send(b"b")
    assert scheduler.delays == [0.005]  # one timer for every sink of the worker
    sinks[0].send(b"c")
    assert writers[0].frames == [] and writers[1].frames == []
    scheduler.run()  # the timer fires
    assert writers[0].frames == [b"abc"] and writers[1].frames == [b"x"]
    sinks[1].send(b"y")
    assert scheduler.delays == [0.005, 0.005]  # the next window starts with the next frame


def test_zero_write_delay_schedules_on_the_next_iteration(impl: ModuleType) -> None:
    scheduler = Scheduler()
    flusher = impl.Flusher(scheduler, 0.0, scheduler.later)
    sink = impl.Sink(Writer(), 10, 1 << 20, None, flusher)
    sink.send(b"a")
    assert scheduler.delays == [] and len(scheduler.callbacks) == 1


def test_flusher_refuses_a_negative_delay_or_a_delay_without_a_timer(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.Flusher(Scheduler(), -0.001, Scheduler().later)
    with pytest.raises(ValueError):
        impl.Flusher(Scheduler(), 0.001)


async def test_write_delay_on_a_running_loop(impl: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    flusher = impl.Flusher(loop.call_soon, 0.05, loop.call_later)
    writer = Writer()
    sink = impl.Sink(writer, 100, 1 << 20, None, flusher)
    start = loop.time()
    sink.send(b"one")
    await asyncio.sleep(0)  # several loop iterations pass: nothing is written yet
    sink.send(b"two")
    await asyncio.sleep(0.01)
    sink.send(b"three")
    assert writer.frames == []
    while not writer.frames:
        await asyncio.sleep(0.005)
        assert loop.time() - start < 1.0, "the delayed write never happened"
    assert writer.frames == [b"onetwothree"]
    assert loop.time() - start >= 0.05 - 0.002  # the loop's timers have millisecond resolution
    sink.close()


async def test_no_write_delay_writes_on_the_next_loop_iteration(impl: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    writer = Writer()
    sink = impl.Sink(writer, 100, 1 << 20, None, impl.Flusher(loop.call_soon))
    sink.send(b"one")
    sink.send(b"two")
    assert writer.frames == []
    await asyncio.sleep(0)
    assert writer.frames == [b"onetwo"]
    sink.close()


# --- deliver -------------------------------------------------------------------------------


def test_deliver_frames_once_and_skips_the_excluded_user(impl: ModuleType) -> None:
    writers = {uid: [Writer(), Writer()] for uid in (1, 2, 3)}
    users = {uid: [impl.Sink(w, 10, 1 << 20) for w in ws] for uid, ws in writers.items()}
    reached, overflowed, behind = impl.deliver(users, frozenset((1, 2, 3, 99)), 2, b"{}")
    assert reached == 4 and overflowed is None and behind is None
    assert writers[2][0].frames == [] and writers[2][1].frames == []
    written = [w.frames[0] for uid in (1, 3) for w in writers[uid]]
    assert written[0] == impl.build_frame(b"{}")
    assert all(frame is written[0] for frame in written)  # one frame object for everyone


@pytest.mark.parametrize("receivers", [(1,), (1, 2, 3, 4, 5, 6, 7, 8)])
def test_deliver_either_iteration_order_reaches_the_same_sinks(impl: ModuleType,
                                                              receivers: tuple[int, ...]
                                                              ) -> None:
    writers = {uid: Writer() for uid in (1, 2, 3)}
    users = {uid: [impl.Sink(w, 10, 1 << 20)] for uid, w in writers.items()}
    reached, _, _ = impl.deliver(users, frozenset(receivers), 3, b"{}")
    expected = set(receivers) & {1, 2}
    assert reached == len(expected)
    assert {uid for uid, w in writers.items() if w.frames} == expected


def test_deliver_reports_overflowed_sinks(impl: ModuleType) -> None:
    full = impl.Sink(Writer(), 1, 1 << 20)
    full.pause()
    full.send(b"x")
    fine_writer = Writer()
    fine = impl.Sink(fine_writer, 1, 1 << 20)
    also_full = impl.Sink(Writer(), 1, 1 << 20)
    also_full.pause()
    also_full.send(b"x")
    reached, overflowed, _ = impl.deliver({1: [full, fine], 2: [also_full]}, [1, 2], None,
                                          b"{}")
    assert reached == 3
    assert overflowed is not None and len(overflowed) == 2
    assert overflowed[0] is full and overflowed[1] is also_full
    assert fine_writer.frames == [impl.build_frame(b"{}")]
    reached, overflowed, _ = impl.deliver({1: [full]}, [1], None, b"{}", True)
    assert overflowed is None  # droppable frames never overflow
    for sink in (full, also_full):
        sink.close()


def test_deliver_to_nobody_builds_nothing(impl: ModuleType) -> None:
    assert impl.deliver({}, [1, 2], None, b"{}") == (0, None, None)
    assert impl.deliver({1: []}, [1], None, b"{}") == (0, None, None)


# --- stream events: the offset of each user, once per sink, in order ------------------------

EVENT = b'{"event":"new_message","data":{"id":7}}'


def with_offset(payload: bytes, offset: int) -> bytes:
    return payload[:-1] + b',"offset":%d}' % offset


@pytest.mark.parametrize("offset", [0, 1, 9, 10, 99, 100, 123456789, 2**63 - 1])
def test_build_frame_splices_the_offset(impl: ModuleType, offset: int) -> None:
    assert impl.build_frame(EVENT, offset) == impl.build_frame(with_offset(EVENT, offset))


def parse(frame: bytes) -> Any:
    """Read one server frame with the websockets library's own parser; its text as JSON."""
    reader = StreamReader()
    reader.feed_data(frame)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
        assert not reader.buffer  # nothing left over
        assert parsed.opcode is Opcode.TEXT and parsed.fin
        return json.loads(bytes(parsed.data))
    raise AssertionError("the frame is incomplete")


@pytest.mark.parametrize("padding", [100, 110, 111, 112, 65_510, 65_520])
def test_an_independent_parser_reads_each_receivers_frame(impl: ModuleType,
                                                         padding: int) -> None:
    payload = b'{"event":"x","data":{"t":"%s"}}' % (b"a" * padding)
    for offset in (1, 10, 100, 1000, 10_000, 100_000):
        assert parse(impl.build_frame(payload, offset)) == {
            "event": "x", "data": {"t": "a" * padding}, "offset": offset}


def test_a_negative_or_too_large_offset_is_refused(impl: ModuleType) -> None:
    with pytest.raises(OverflowError):
        impl.build_frame(EVENT, 2**63)


@pytest.mark.parametrize("size", [100, 110, 111, 112, 113, 114, 65510, 65520, 65525])
def test_the_offset_can_push_a_frame_into_a_longer_header(impl: ModuleType, size: int) -> None:
    payload = b'{"t":"' + b"x" * size + b'"}'
    for offset in (1, 9, 10, 99, 100, 99999):
        assert impl.build_frame(payload, offset) == impl.build_frame(with_offset(payload, offset))


@pytest.mark.parametrize("payload", [b"{}", b"[1,2]", b'"x"', b""])
def test_only_a_json_object_takes_an_offset(impl: ModuleType, payload: bytes) -> None:
    with pytest.raises(ValueError):
        impl.build_frame(payload, 1)
    with pytest.raises(ValueError):
        impl.deliver({1: [impl.Sink(Writer(), 1, 1)]}, [1], None, payload, False, {1: 1})


def test_offsets_are_framed_once_per_user(impl: ModuleType) -> None:
    writers = {uid: [Writer(), Writer()] for uid in (1, 2, 3)}
    users = {uid: [impl.Sink(w, 10, 1 << 20) for w in ws] for uid, ws in writers.items()}
    assert impl.deliver(users, [1, 2, 3], None, EVENT, False, {1: 5, 2: 9}) == (6, None, None)
    one, two, three = ([w.frames[0] for w in writers[uid]] for uid in (1, 2, 3))
    assert one[0] is one[1] and one[0] == impl.build_frame(EVENT, 5)
    assert two[0] is two[1] and two[0] == impl.build_frame(EVENT, 9)
    assert three[0] == impl.build_frame(EVENT)  # no stream: the plain frame
    assert [users[1][0].stream_last, users[2][0].stream_last] == [-1, -1]  # not tracked


def test_a_tracked_sink_is_written_each_offset_once_and_in_order(impl: ModuleType) -> None:
    writer = Writer()
    sink = impl.Sink(writer, 10, 1 << 20)
    sink.stream_last = 4
    users = {1: [sink]}
    for offset in (5, 5, 3, 6):
        assert impl.deliver(users, [1], None, EVENT, False, {1: offset})[2] is None
    assert writer.frames == [impl.build_frame(EVENT, 5), impl.build_frame(EVENT, 6)]
    reached, _, behind = impl.deliver(users, [1], None, EVENT, False, {1: 9})
    assert reached == 0 and behind == [sink]  # 7 and 8 are missing: it catches up
    assert sink.catching_up and sink.seen == 9 and sink.stream_last == 6
    assert len(writer.frames) == 2


def test_a_sink_catching_up_is_written_no_broadcast(impl: ModuleType) -> None:
    writer = Writer()
    sink = impl.Sink(writer, 10, 1 << 20)
    sink.catching_up = True
    assert impl.deliver({1: [sink]}, [1], None, EVENT, False, {1: 3}) == (0, None, None)
    assert impl.deliver({1: [sink]}, [1], None, EVENT, False, {1: 2}) == (0, None, None)
    assert impl.deliver({1: [sink]}, [1], None, b'{"event":"user_typing"}', True) \
        == (0, None, None)
    assert writer.frames == [] and sink.seen == 3
    sink.send(b"direct")  # what is sent to the connection itself still goes
    assert writer.frames == [b"direct"]


def test_write_now_goes_after_collected_frames_and_past_the_queue(impl: ModuleType) -> None:
    sink, writer, scheduler = coalescing_sink(impl, capacity=1)
    sink.send(b"greeting")
    sink.write_now(b"replayed")
    assert writer.frames == [b"greeting", b"replayed"]
    assert sink.queued_bytes == 0
    scheduler.run()
    sink.close()
    sink.write_now(b"late")
    assert writer.frames == [b"greeting", b"replayed"]


def test_on_resume_runs_once_the_queue_is_written_and_when_the_sink_closes(
        impl: ModuleType) -> None:
    calls: list[tuple[bool, bool]] = []
    sink, writer = paused_sink(impl)
    sink.on_resume = lambda: calls.append((sink.paused, sink.closed))
    sink.send(b"queued")
    sink.resume()
    assert writer.frames == [b"queued"] and calls == [(False, False)]
    sink.close()
    assert calls == [(False, False), (False, True)] and sink.on_resume is None


# --- the twins agree -----------------------------------------------------------------------


def _drive(impl: ModuleType, seed: int) -> list[object]:
    """A random life of three sinks sharing a flusher: sends of every size and kind, pauses,
    resumes, early flushes, loop iterations, closes. Returns everything observable."""
    rng = random.Random(seed)
    scheduler = Scheduler()
    flusher = impl.Flusher(scheduler)
    writers = [Writer() for _ in range(3)]
    sinks = [impl.Sink(w, rng.randint(1, 6), rng.randint(4, 40), None,
                       flusher if i else None) for i, w in enumerate(writers)]
    seen: list[object] = []
    base = impl.stats()
    for step in range(300):
        sink = rng.choice(sinks)
        action = rng.random()
        if action < 0.6:
            frame = bytes([65 + step % 26]) * rng.randint(1, 12)
            seen.append(sink.send(frame, rng.random() < 0.4))
        elif action < 0.72:
            sink.pause()
        elif action < 0.84:
            sink.resume()
        elif action < 0.9:
            sink.flush()
        elif action < 0.98:
            scheduler.run()
        else:
            sink.close(rng.random() < 0.5)
        counts = impl.stats()
        seen.append((sink.paused, sink.closed, sink.queued_bytes,
                     counts["rings"] - base["rings"], counts["queued"] - base["queued"]))
    scheduler.run()
    seen.extend(w.frames for w in writers)
    for sink in sinks:
        sink.close()
    return seen


def _public(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def test_the_twins_have_one_interface() -> None:
    pure, fast = _load("_pure"), _load("_fast")
    assert set(pure.__all__) <= _public(fast)
    for name in ("Flusher", "Kept", "Sink", "StreamLog"):
        assert _public(getattr(pure, name)) == _public(getattr(fast, name)), name


@pytest.mark.parametrize("seed", range(40))
def test_the_twins_behave_alike(seed: int) -> None:
    assert _drive(_load("_pure"), seed) == _drive(_load("_fast"), seed)


def _drive_streams(impl: ModuleType, seed: int) -> list[object]:
    """Random stream deliveries to four users of two sinks each: offsets in order, repeated,
    skipped, absent; sinks catching up, going live, paused, untracked. Returns everything
    observable."""
    rng = random.Random(seed)
    writers = [Writer() for _ in range(8)]
    sinks = [impl.Sink(w, 4, 400) for w in writers]
    users = {uid: sinks[2 * uid:2 * uid + 2] for uid in range(4)}
    latest = dict.fromkeys(users, 0)
    seen: list[object] = []
    for _ in range(200):
        action = rng.random()
        sink = rng.choice(sinks)
        if action < 0.6:
            offsets = {}
            for uid in users:
                if rng.random() < 0.8:
                    latest[uid] += rng.choice((1, 1, 1, 0, 2))
                    offsets[uid] = max(1, latest[uid] - rng.choice((0, 0, 0, 1)))
            receivers = rng.sample(sorted(users), rng.randint(0, 4))
            reached, overflowed, behind = impl.deliver(
                users, receivers, rng.choice((None, 0, 3)), b'{"n":%d}' % rng.randint(0, 99),
                rng.random() < 0.2, offsets if rng.random() < 0.8 else None)
            seen.append((reached, [sinks.index(x) for x in overflowed or ()],
                         [sinks.index(x) for x in behind or ()]))
        elif action < 0.7:
            sink.catching_up = not sink.catching_up
        elif action < 0.8:
            sink.stream_last = rng.choice((-1, sink.stream_last, sink.seen))
        elif action < 0.9:
            sink.pause()
        else:
            sink.resume()
        seen.append([(x.stream_last, x.seen, x.catching_up, x.queued_bytes) for x in sinks])
    seen.extend(w.frames for w in writers)
    for sink in sinks:
        sink.close()
    return seen


@pytest.mark.parametrize("seed", range(40))
def test_the_twins_deliver_stream_events_alike(seed: int) -> None:
    assert _drive_streams(_load("_pure"), seed) == _drive_streams(_load("_fast"), seed)


# --- which implementation runs -------------------------------------------------------------


def _implementation_in_subprocess(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "GOGATE_NO_EXTENSIONS"}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env)
    result = subprocess.run(
        [sys.executable, "-c", "import gogate_fast; print(gogate_fast.IMPLEMENTATION)"],
        env=environ, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def test_no_extensions_env_selects_pure() -> None:
    assert _implementation_in_subprocess(GOGATE_NO_EXTENSIONS="1") == "pure"


def test_the_compiled_module_runs_by_default() -> None:
    """The build must produce the compiled hot path: the pure twin is only a fallback, and a
    build that silently fell back to it fails here."""
    assert _implementation_in_subprocess() == "compiled"


def test_this_process_runs_the_selected_implementation() -> None:
    import gogate_fast

    expected = "pure" if os.environ.get("GOGATE_NO_EXTENSIONS") else "compiled"
    selected = gogate_fast.IMPLEMENTATION
    assert selected == expected
    module = _load("_pure" if expected == "pure" else "_fast")
    assert gogate_fast.Sink is module.Sink
    assert gogate_fast.Flusher is module.Flusher
    assert gogate_fast.build_frame is module.build_frame
    assert gogate_fast.deliver is module.deliver
    assert gogate_fast.stats is module.stats
