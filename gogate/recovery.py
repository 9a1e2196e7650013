"""Resuming a user's stream on one connection: the replay of what it missed, paced by its
socket, and the hand-over to live events with no event twice and none skipped.

A connection that authenticates is registered in the hub catching up (see
:meth:`gogate.hub.Hub.enter`): the fan-out writes it no broadcast and only records, in its
sink's ``seen``, the highest offset it offered. The broker's grant says where the user's
stream stands, and, when the client's ``since`` can be served, carries every event after it.
:meth:`Recovery.begin` then writes those events, oldest first with their original offsets,
past the send queue and only while the socket takes data; asks the broker for whatever was
numbered meanwhile (``seen`` beyond the last one written), and writes that too; and, once
nothing newer was offered, lets the sink go live from the last offset written. Live, the
fan-out writes each offset once and in order; a sink that finds a gap before an offset (an
event that reached another worker's path first) catches up the same way.

The replay never counts toward ``SEND_QUEUE_SIZE`` and never closes a connection as a slow
consumer. Only when the kept events move past a connection still reading its replay (more
than ``RECOVERY_SIZE`` new events for the user meanwhile) can it not go on: it is closed
(1013), and its next resume is answered ``recovered: false``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import Final

from msgspec import UNSET, UnsetType

from gogate.errors import Close
from gogate.events import StreamPosition, encode
from gogate.hub import Broker, Grant, Peer, Replayed
from gogate.log import hub_log
from gogate.metrics import Metrics
from gogate_fast import Sink, build_frame

__all__ = ["Recovery"]

_CHUNK: Final = 64  # replayed frames per write


class Recovery:
    """The stream side of one worker's connections: the position each connection starts
    from, its replay and catch-up, and a replaced stream's ``stream_reset``."""

    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        self._broker = broker
        self._metrics = metrics
        self.tasks: set[asyncio.Task[None]] = set()  # catch-ups waiting for a socket or a fetch

    @staticmethod
    def greeting(sink: Sink, grant: Grant | None, since: StreamPosition | None
                 ) -> tuple[StreamPosition | UnsetType, bool | UnsetType]:
        """``stream`` and ``recovered`` of an ``auth_success``: for a connection that just
        entered with ``grant``, where the stream stands and whether ``since`` is served; for
        an authenticated one (no grant), where the connection stands: the epoch and the
        offset of the last stream event written to it."""
        if grant is not None:
            stream = UNSET if grant.epoch is None else StreamPosition(grant.epoch, grant.offset)
            return stream, UNSET if since is None else bool(grant.recovered)
        epoch = sink.epoch
        if not isinstance(epoch, str):
            return UNSET, UNSET
        return StreamPosition(epoch, max(0, sink.stream_last)), UNSET

    def begin(self, sink: Sink, user_id: int, grant: Grant,
              since: StreamPosition | None) -> None:
        """Start a connection that entered the hub with ``grant``, once its ``auth_success``
        was sent: replay what it missed, catch up with what was numbered meanwhile, then live.
        """
        if since is not None:
            self._metrics.resumes.labels(
                "recovered" if grant.recovered else "not_recovered").inc()
        epoch = grant.epoch
        if epoch is None:  # no stream: every broadcast as it comes
            sink.epoch = None
            sink.stream_last = -1
            sink.catching_up = False
            return
        sink.epoch = epoch
        if grant.recovered and since is not None and grant.events:
            sink.stream_last = since.offset
            self._catch_up(sink, user_id, epoch, grant.events)
            return
        sink.stream_last = grant.offset
        if sink.seen > grant.offset:  # numbered while the broker answered
            self._catch_up(sink, user_id, epoch, ())
        else:
            sink.catching_up = False

    def catch_up(self, sinks: Iterable[Sink]) -> None:
        """Connections that found a gap in their stream: fetch and write it, then live."""
        for sink in sinks:
            user_id = getattr(sink.owner, "user_id", None)
            epoch = sink.epoch
            if isinstance(user_id, int) and isinstance(epoch, str):
                self._catch_up(sink, user_id, epoch, ())

    def reset(self, sinks: Iterable[Sink], epoch: str, offset: int) -> None:
        """The user's stream was replaced: each connection is told its new position with
        ``stream_reset``, stops any catch-up of the old stream, and goes on from there."""
        frame = build_frame(encode("stream_reset", StreamPosition(epoch, offset)))
        for sink in sinks:
            sink.epoch = epoch
            sink.stream_last = offset
            sink.seen = 0
            sink.catching_up = False
            waiting = sink.on_resume
            if waiting is not None:  # a catch-up of the old stream sees the new epoch, and ends
                waiting()
            if not sink.send(frame):
                owner: Peer = sink.owner  # type: ignore[assignment]
                owner.close(Close.SLOW_CONSUMER)

    def _catch_up(self, sink: Sink, user_id: int, epoch: str, events: Replayed) -> None:
        """Write ``events`` now while the socket takes them; the rest, and any fetch, in a
        task of its own."""
        sink.catching_up = True
        at = self._write(sink, events, 0)
        if at == len(events) and sink.seen <= sink.stream_last:
            sink.catching_up = False  # all written at once, nothing newer offered
            return
        task = asyncio.get_running_loop().create_task(
            self._finish(sink, user_id, epoch, events, at))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _write(self, sink: Sink, events: Replayed, at: int) -> int:
        """Write ``events`` from index ``at`` in chunks while the socket takes data; returns
        the index reached."""
        total = len(events)
        start = at
        while at < total and not sink.paused and not sink.closed:
            chunk = events[at:at + _CHUNK]
            sink.write_now(b"".join([build_frame(payload, offset) for offset, payload in chunk]))
            sink.stream_last = chunk[-1][0]
            at += len(chunk)
        if at > start:
            self._metrics.replayed.inc(at - start)
        return at

    async def _finish(self, sink: Sink, user_id: int, epoch: str, events: Replayed,
                      at: int) -> None:
        """The rest of a catch-up: write as the socket drains, fetch what was numbered
        meanwhile, until nothing newer was offered. It ends, writing nothing more, once the
        connection closes or its stream is replaced (``reset``)."""
        loop = asyncio.get_running_loop()

        def over() -> bool:
            return sink.closed or not sink.catching_up or sink.epoch != epoch

        try:
            while True:
                while at < len(events):
                    if over():
                        return
                    if sink.paused:
                        drained = loop.create_future()
                        sink.on_resume = functools.partial(_wake, drained)
                        await drained
                        sink.on_resume = None
                        continue
                    at = self._write(sink, events, at)
                if over():
                    return
                if sink.seen <= sink.stream_last:
                    sink.catching_up = False
                    return
                more = await self._broker.replay(user_id, epoch, sink.stream_last)
                if over():
                    return
                if more is None:
                    hub_log.info("replay overrun: the kept events moved past the connection",
                                 extra={"user_id": user_id})
                    owner: Peer = sink.owner  # type: ignore[assignment]
                    owner.close(Close.REPLAY_OVERRUN)
                    return
                events, at = more, 0
        finally:
            sink.on_resume = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
