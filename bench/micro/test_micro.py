"""Micro-benchmarks of gogate's hot path: the compiled module against its pure-Python twin.

What is measured, one table per group (pytest-benchmark; one call of the body per round):

``decode``        ``gogate.events.decode_inbound`` of a typical ``send_message`` frame (msgspec
                  only, the same for both implementations: one row).
``encode``        ``gogate.events.encode`` of ``new_message`` around a 350-byte backend message
                  passed through as ``msgspec.Raw``, and of ``user_typing`` (msgspec only).
``frame``         ``build_frame`` of a 350-byte and of a 70 KB payload (2- and 8-byte lengths).
``fanout-1000``   one broadcast to 1,000 and to 10,000 users holding one sink each: ``deliver``
``fanout-10000``  (frame once, send to every sink, each sink marks itself dirty in its
                  ``Flusher``) and then the flush the loop would have run, so each sink's
                  coalesced ``write`` is inside the measurement. ``write`` is a cheap C call
                  (``deque(maxlen=1).append``); the loop's ``call_soon`` is a list that records
                  the callback, and the body runs that callback: no event loop is involved.
``collect-5x1000`` five broadcasts to the same 1,000 users, then one flush: what ``WRITE_DELAY``
                  does when five messages arrive within the delay (one write of five frames per
                  sink instead of five writes).
``ring``          one pause episode of a connection: pause a sink (capacity 256, the default
                  ``SEND_QUEUE_SIZE``), queue 256 frames of 350-byte messages, resume (the ring
                  drains in one write). The 256 ``send`` calls are made from Python in both.

Each benchmark except ``decode`` and ``encode`` runs once per implementation, ids ``pure``
(``gogate_fast._pure``) and ``compiled`` (``gogate_fast._fast``, imported directly: a missing
build fails collection instead of quietly measuring the pure module twice).

    python -m bench.micro                                  # the table, a few seconds
    python -m pytest bench/micro --benchmark-only \\
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops
    python -m pytest bench/micro --benchmark-only -k fanout --benchmark-max-time=2
    python -m pytest bench/micro --benchmark-disable -q    # CI smoke: each body runs once

``bench/`` is outside ``testpaths``: a bare ``python -m pytest`` never collects these.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgspec
import pytest

from gogate.events import SendMessage, UserTypingData, decode_inbound, encode
from gogate_fast import _fast, _pure

IMPLEMENTATIONS = [pytest.param(_pure, id="pure"), pytest.param(_fast, id="compiled")]
implementations = pytest.mark.parametrize("impl", IMPLEMENTATIONS)

CAPACITY = 256  # Settings.send_queue_size default
BATCH = 5  # broadcasts one write delay collects into one write per connection
MAX_BYTES = 16 * 1024 * 1024  # gogate.connection.SEND_QUEUE_MIN_BYTES: the byte bound in use

# A send_message frame as a client sends it.
SEND_MESSAGE_FRAME = (
    b'{"event":"send_message","data":{"chat_id":42,"text":"Running late, start without me.",'
    b'"reply_to_id":184466},"ref":17}'
)


def backend_message(message_id: int, text: str) -> bytes:
    """A message as the development backend returns it (``DevBackendApp._message_json``)."""
    return (
        b'{"id":%d,"chat_id":42,"user":{"id":1001,"full_name":"Jane Doe","first_name":"Jane",'
        b'"last_name":"Doe","phone":"+15550100123"},"type":"text","text":%s,"reply_to":null,'
        b'"attachments":[],"reactions":[],"read_count":0,"mentions":null,'
        b'"created_at":"2024-11-25T18:41:07.512Z","edited_at":null,"is_edited":false}'
    ) % (message_id, msgspec.json.encode(text))


TEXT = "Running late: start without me. Draft is up"
MESSAGE = backend_message(184467, TEXT)
assert len(MESSAGE) == 350, len(MESSAGE)
NEW_MESSAGE = encode("new_message", msgspec.Raw(MESSAGE))  # the payload a broadcast frames
LARGE = backend_message(184467, "x" * (70 * 1024 - len(MESSAGE) + len(TEXT)))
assert len(LARGE) == 70 * 1024, len(LARGE)


def recording_flusher(impl: ModuleType) -> tuple[Any, list[Callable[[], None]]]:
    """A Flusher whose ``call_soon`` records the callback instead of running a loop."""
    scheduled: list[Callable[[], None]] = []
    return impl.Flusher(scheduled.append), scheduled


@pytest.mark.benchmark(group="decode")
def test_decode_send_message(benchmark: Any) -> None:
    event = benchmark(decode_inbound, SEND_MESSAGE_FRAME)
    assert isinstance(event, SendMessage)
    assert event.data.chat_id == 42


@pytest.mark.benchmark(group="encode")
@pytest.mark.parametrize(("event", "data"), [
    pytest.param("new_message", msgspec.Raw(MESSAGE), id="new_message"),
    pytest.param("user_typing", UserTypingData(42, 1001, "Jane Doe", True), id="user_typing"),
])
def test_encode(benchmark: Any, event: str, data: Any) -> None:
    payload = benchmark(encode, event, data)
    assert msgspec.json.decode(payload)["event"] == event


@pytest.mark.benchmark(group="frame")
@pytest.mark.parametrize("payload", [
    pytest.param(MESSAGE, id="350B"),
    pytest.param(LARGE, id="70KB"),
])
@implementations
def test_build_frame(benchmark: Any, impl: ModuleType, payload: bytes) -> None:
    frame = benchmark(impl.build_frame, payload)
    assert frame.endswith(payload)
    assert frame == _pure.build_frame(payload)


@pytest.mark.parametrize("users", [
    pytest.param(1_000, id="1000", marks=pytest.mark.benchmark(group="fanout-1000")),
    pytest.param(10_000, id="10000", marks=pytest.mark.benchmark(group="fanout-10000")),
])
@implementations
def test_fanout(benchmark: Any, impl: ModuleType, users: int) -> None:
    flusher, scheduled = recording_flusher(impl)
    written = [deque[bytes](maxlen=1) for _ in range(users)]
    hub = {user_id: [impl.Sink(out.append, CAPACITY, MAX_BYTES, None, flusher)]
           for user_id, out in enumerate(written, 1)}
    members = frozenset(hub)  # the chat's member list, as the hub receives it
    deliver = impl.deliver

    def broadcast() -> tuple[int, Any, Any]:
        result: tuple[int, Any, Any] = deliver(hub, members, None, NEW_MESSAGE)
        scheduled.pop()()  # the one callback the loop would run: Flusher.flush
        return result

    reached, overflowed, behind = benchmark(broadcast)
    assert (reached, overflowed, behind) == (users, None, None)
    assert not scheduled
    frame = impl.build_frame(NEW_MESSAGE)
    assert all(out[0] == frame for out in written)  # every sink wrote in the last flush


@pytest.mark.benchmark(group="collect-5x1000")
@implementations
def test_fanout_collected(benchmark: Any, impl: ModuleType) -> None:
    users = 1_000
    flusher, scheduled = recording_flusher(impl)
    written = [deque[bytes](maxlen=1) for _ in range(users)]
    hub = {user_id: [impl.Sink(out.append, CAPACITY, MAX_BYTES, None, flusher)]
           for user_id, out in enumerate(written, 1)}
    members = frozenset(hub)
    deliver = impl.deliver

    def broadcasts() -> None:
        for _ in range(BATCH):
            deliver(hub, members, None, NEW_MESSAGE)
        scheduled.pop()()  # the write delay has passed: Flusher.flush

    benchmark(broadcasts)
    assert not scheduled
    frame = impl.build_frame(NEW_MESSAGE)
    assert all(out[0] == frame * BATCH for out in written)  # one write of five frames each


@pytest.mark.benchmark(group="ring")
@implementations
def test_ring_push_drain(benchmark: Any, impl: ModuleType) -> None:
    flusher, scheduled = recording_flusher(impl)
    written = deque[bytes](maxlen=1)
    sink = impl.Sink(written.append, CAPACITY, MAX_BYTES, None, flusher)
    frames = [impl.build_frame(encode("new_message", msgspec.Raw(backend_message(i, "hi"))))
              for i in range(CAPACITY)]

    def pause_push_resume() -> bool:
        sink.pause()
        queued = all(map(sink.send, frames))
        sink.resume()
        return queued

    assert benchmark(pause_push_resume)
    assert impl.stats()["queued"] == 0 and not sink.paused and not scheduled
    assert written[0] == b"".join(frames)
