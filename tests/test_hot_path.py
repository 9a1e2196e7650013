"""The hot path, ``gogate_fast``: server frames, per-connection send queues, fan-out.

Every test runs against each implementation that can be imported: the pure-Python one always,
the compiled one once it is built.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _implementations() -> list[ModuleType]:
    found = []
    for name in ("gogate_fast._pure", "gogate_fast._fast"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(name))
    return found


IMPLEMENTATIONS = _implementations()


@pytest.fixture(params=IMPLEMENTATIONS, ids=[m.__name__.rsplit(".", 1)[1]
                                             for m in IMPLEMENTATIONS])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


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
                ) -> tuple[object, Writer]:
    writer = Writer()
    sink = impl.Sink(writer, capacity, max_bytes)
    sink.pause()
    return sink, writer


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


# --- Sink ----------------------------------------------------------------------------------


def test_writes_through_while_not_paused(impl: ModuleType) -> None:
    writer = Writer()
    sink = impl.Sink(writer, 2, 10)
    frames = [b"a" * 8, b"b" * 8, b"c" * 8, b"d" * 8]  # more than capacity and max_bytes
    for f in frames:
        assert sink.send(f) is True
    assert writer.frames == frames
    assert all(a is b for a, b in zip(writer.frames, frames, strict=True))
    assert sink.queued == 0


def test_queues_while_paused_and_resume_writes_in_order(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl)
    frames = [b"1", b"22", b"333"]
    for i, f in enumerate(frames):
        assert sink.send(f, droppable=i == 1) is True
    assert writer.data == b"".join([])
    assert sink.queued == 3
    assert sink.queued_bytes == 6
    sink.resume()
    assert writer.data == b"".join(frames)
    assert sink.queued == 0
    assert sink.queued_bytes == 0
    assert sink.send(b"4") is True
    assert writer.data.endswith(b"4")


def test_send_after_resume_goes_after_the_queue(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl)
    sink.send(b"a")
    sink.send(b"b")
    sink.resume()
    sink.send(b"c")
    assert writer.data == b"".join([b"a", b"b", b"c"])


def test_pause_during_the_resume_write_queues_what_follows(impl: ModuleType) -> None:
    written: list[bytes] = []
    sink = None

    def write(data: bytes) -> None:
        written.append(data)
        sink.pause()  # the transport passed its high-water mark during this write

    sink = impl.Sink(write, 100, 1 << 20)
    sink.pause()
    queued = [bytes([65 + i]) for i in range(5)]
    for f in queued:
        sink.send(f)
    sink.resume()
    assert b"".join(written) == b"ABCDE"  # the whole queue, in order
    assert sink.queued == 0
    assert sink.paused
    sink.send(b"Z")  # paused again: queued, not written
    assert sink.queued == 1
    assert b"".join(written) == b"ABCDE"
    sink.resume()
    assert b"".join(written) == b"ABCDEZ"


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
    assert sink.queued == 3
    sink.resume()
    assert writer.data == b"".join([b"a", b"b", b"c"])


def test_oldest_droppable_shed_for_non_droppable(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=4)
    sink.send(b"m1")
    sink.send(b"t1", droppable=True)
    sink.send(b"m2")
    sink.send(b"t2", droppable=True)
    assert sink.send(b"m3") is True
    assert sink.queued == 4
    assert sink.send(b"m4") is True  # sheds t2, the last droppable
    assert sink.send(b"m5") is False  # nothing left to shed
    sink.resume()
    assert writer.data == b"".join([b"m1", b"m2", b"m3", b"m4"])


def test_droppable_shed_only_as_needed(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=3)
    sink.send(b"t1", droppable=True)
    sink.send(b"t2", droppable=True)
    sink.send(b"t3", droppable=True)
    assert sink.send(b"m1") is True
    assert sink.queued == 3
    sink.resume()
    assert writer.data == b"".join([b"t2", b"t3", b"m1"])


def test_byte_bound_refuses_non_droppable(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=100, max_bytes=10)
    assert sink.send(b"1234") is True
    assert sink.send(b"5678") is True
    assert sink.send(b"abc") is False  # 11 bytes would not fit
    assert sink.send(b"ab") is True  # exactly 10 fits
    assert sink.queued_bytes == 10
    sink.resume()
    assert writer.data == b"".join([b"1234", b"5678", b"ab"])


def test_byte_bound_sheds_droppable_first(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=100, max_bytes=10)
    sink.send(b"tttt", droppable=True)
    sink.send(b"mmmm")
    assert sink.send(b"xxxxx", droppable=True) is True  # droppable newcomer: dropped
    assert sink.queued_bytes == 8
    assert sink.send(b"nnnn") is True  # sheds the oldest droppable to fit
    assert sink.queued_bytes == 8
    sink.resume()
    assert writer.data == b"".join([b"mmmm", b"nnnn"])


def test_byte_count_returns_to_zero_after_shedding(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=2, max_bytes=100)
    sink.send(b"t" * 10, droppable=True)
    sink.send(b"m" * 20)
    sink.send(b"n" * 30)  # sheds the droppable frame
    sink.resume()
    assert sink.queued == 0
    assert sink.queued_bytes == 0
    assert writer.data == b"".join([b"m" * 20, b"n" * 30])


def test_frame_larger_than_max_bytes_while_paused(impl: ModuleType) -> None:
    sink, _ = paused_sink(impl, capacity=10, max_bytes=4)
    assert sink.send(b"12345") is False
    assert sink.send(b"12345", droppable=True) is True
    assert sink.queued == 0


def test_close_discards_and_further_sends_are_noops(impl: ModuleType) -> None:
    sink, writer = paused_sink(impl, capacity=2)
    sink.send(b"a")
    sink.send(b"b")
    sink.close()
    assert sink.closed
    assert sink.queued == 0
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


# --- fanout --------------------------------------------------------------------------------


def test_fanout_shares_one_frame_object(impl: ModuleType) -> None:
    writers = [Writer() for _ in range(5)]
    sinks = [impl.Sink(w, 4, 1024) for w in writers]
    sinks[1].pause()
    frame = impl.build_frame(b'{"event":"new_message","data":{}}')
    assert impl.fanout(frame, sinks) == []
    sinks[1].resume()
    for writer in writers:
        assert len(writer.frames) == 1
        assert writer.frames[0] is frame


def test_fanout_returns_exactly_the_overflowed(impl: ModuleType) -> None:
    writers = [Writer() for _ in range(4)]
    sinks = [impl.Sink(w, 1, 1024) for w in writers]
    sinks[1].pause()
    sinks[3].pause()
    sinks[1].send(b"full")
    sinks[3].send(b"full")
    overflowed = impl.fanout(b"frame", sinks)
    assert len(overflowed) == 2
    assert overflowed[0] is sinks[1] and overflowed[1] is sinks[3]
    assert writers[0].frames == [b"frame"] and writers[2].frames == [b"frame"]


def test_fanout_droppable_never_overflows(impl: ModuleType) -> None:
    writers = [Writer() for _ in range(3)]
    sinks = [impl.Sink(w, 1, 1024) for w in writers]
    sinks[0].pause()
    sinks[0].send(b"full")
    assert impl.fanout(b"typing", sinks, True) == []
    assert writers[1].frames == [b"typing"]


def test_fanout_accepts_any_iterable(impl: ModuleType) -> None:
    writer = Writer()
    sinks = (impl.Sink(writer, 1, 10) for _ in range(3))
    assert impl.fanout(b"f", sinks) == []
    assert writer.frames == [b"f", b"f", b"f"]


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


def test_implementation_without_env_matches_what_is_built() -> None:
    built = any(m.__name__.endswith("_fast") for m in IMPLEMENTATIONS)
    assert _implementation_in_subprocess() == ("compiled" if built else "pure")


def test_package_exports_the_selected_implementation() -> None:
    import gogate_fast

    expected = importlib.import_module(
        "gogate_fast._fast" if gogate_fast.IMPLEMENTATION == "compiled" else "gogate_fast._pure")
    assert gogate_fast.Sink is expected.Sink
    assert gogate_fast.build_frame is expected.build_frame
    assert gogate_fast.fanout is expected.fanout


# --- coalescing, deliver, leak counters ----------------------------------------------------


class Scheduler:
    """The loop's ``call_soon``, run by hand: callbacks wait until ``run()``."""

    def __init__(self) -> None:
        self.callbacks: list[object] = []

    def __call__(self, callback: object) -> None:
        self.callbacks.append(callback)

    def run(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()  # type: ignore[operator]


def coalescing_sink(impl: ModuleType, capacity: int = 100
                    ) -> tuple[object, Writer, Scheduler, object]:
    scheduler = Scheduler()
    flusher = impl.Flusher(scheduler)
    writer = Writer()
    return impl.Sink(writer, capacity, 1 << 20, None, flusher), writer, scheduler, flusher


def test_frames_of_one_iteration_leave_in_one_write(impl: ModuleType) -> None:
    sink, writer, scheduler, flusher = coalescing_sink(impl)
    for f in (b"one", b"two", b"three"):
        assert sink.send(f) is True
    assert writer.frames == []  # nothing written inside the iteration
    assert len(scheduler.callbacks) == 1 and flusher.pending == 1
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
    assert impl.fanout(frame, sinks) == []
    assert len(scheduler.callbacks) == 1
    scheduler.run()
    assert all(w.frames == [frame] for w in writers)
    assert all(w.frames[0] is frame for w in writers)  # a single frame is not copied


def test_resume_writes_coalesced_frames_before_the_queue(impl: ModuleType) -> None:
    sink, writer, scheduler, _ = coalescing_sink(impl)
    sink.send(b"a")  # coalesced, not yet written
    sink.pause()
    sink.send(b"b")  # queued behind it
    sink.resume()
    scheduler.run()
    assert writer.data == b"ab"


def test_close_writes_coalesced_frames_unless_told_not_to(impl: ModuleType) -> None:
    sink, writer, scheduler, _ = coalescing_sink(impl)
    sink.send(b"last words")
    sink.close()
    assert writer.data == b"last words"  # before the close frame the caller sends next
    scheduler.run()
    assert writer.data == b"last words"
    sink2, writer2, scheduler2, _ = coalescing_sink(impl)
    sink2.send(b"lost")
    sink2.close(flush=False)
    scheduler2.run()
    assert writer2.frames == []


def test_deliver_frames_once_and_skips_the_excluded_user(impl: ModuleType) -> None:
    writers = {uid: [Writer(), Writer()] for uid in (1, 2, 3)}
    users = {uid: [impl.Sink(w, 10, 1 << 20) for w in ws] for uid, ws in writers.items()}
    reached, overflowed = impl.deliver(users, frozenset((1, 2, 3, 99)), 2, b"{}")
    assert reached == 4 and overflowed is None
    assert writers[2][0].frames == [] and writers[2][1].frames == []
    written = [w.frames[0] for uid in (1, 3) for w in writers[uid]]
    assert written[0] == impl.build_frame(b"{}")
    assert all(frame is written[0] for frame in written)  # one frame object for everyone


@pytest.mark.parametrize("receivers", [(1,), (1, 2, 3, 4, 5, 6, 7, 8)])
def test_deliver_either_iteration_order_reaches_the_same_sinks(impl: ModuleType,
                                                              receivers: tuple[int, ...]
                                                              ) -> None:
    users = {uid: [impl.Sink(Writer(), 10, 1 << 20)] for uid in (1, 2, 3)}
    reached, _ = impl.deliver(users, frozenset(receivers), None, b"{}")
    assert reached == len(set(receivers) & {1, 2, 3})


def test_deliver_reports_overflowed_sinks(impl: ModuleType) -> None:
    full = impl.Sink(Writer(), 1, 1 << 20)
    full.pause()
    full.send(b"x")
    fine = impl.Sink(Writer(), 1, 1 << 20)
    reached, overflowed = impl.deliver({1: [full], 2: [fine]}, [1, 2], None, b"{}")
    assert reached == 2 and overflowed == [full]
    reached, overflowed = impl.deliver({1: [full]}, [1], None, b"{}", True)
    assert overflowed is None  # droppable frames never overflow


def test_deliver_to_nobody_builds_nothing(impl: ModuleType) -> None:
    assert impl.deliver({}, [1, 2], None, b"{}") == (0, None)


def test_leak_counters_return_to_zero(impl: ModuleType) -> None:
    import gc

    gc.collect()
    before = impl.stats()
    sinks = [impl.Sink(Writer(), 4, 1 << 20) for _ in range(10)]
    for sink in sinks:
        sink.pause()
        sink.send(b"queued")
    during = impl.stats()
    assert during["sinks"] == before["sinks"] + 10
    assert during["rings"] == before["rings"] + 10
    for sink in sinks[:5]:
        sink.resume()  # the ring is released once drained
    assert impl.stats()["rings"] == before["rings"] + 5
    del sinks, sink
    gc.collect()
    assert impl.stats() == before


def test_compiled_extension_is_built() -> None:
    """The build must produce the compiled hot path; the pure twin is only a fallback."""
    module = importlib.import_module("gogate_fast._fast")
    assert module.build_frame(b"x") == b"\x81\x01x"
