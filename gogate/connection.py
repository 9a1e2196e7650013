"""One client WebSocket: the picows listener, its state machine, its deadlines and its inbox.

Frames are reassembled and decoded as text inside ``on_ws_frame`` and never kept; the text goes
to the worker's :class:`Dispatch`, which answers it at once or hands the event back to
:meth:`Connection.enqueue`. Queued events run one at a time, in arrival order, so that a
connection's writes reach the backend in the order it sent them.

A connection lives through the :class:`State` values in their order; it is in the hub (and
receives broadcasts) while AUTHENTICATED or EXPIRED. One deadline serves every state that has
one, checked by the worker's heartbeat rather than by a timer per connection.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import deque
from typing import Final, Protocol

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from gogate.config import Settings
from gogate.errors import Close, ErrorCode
from gogate.events import Auth, Inbound, encode_error
from gogate.frames import Fragments, unsendable_close
from gogate.hub import Hub
from gogate.metrics import Metrics
from gogate.models import User
from gogate.registry import Registry
from gogate_fast import Flusher, Sink, build_frame

__all__ = ["Connection", "Dispatch", "State"]

MAX_PENDING_WRITES: Final = 256  # events waiting in one connection's inbox
SEND_QUEUE_MIN_BYTES: Final = 16 * 1024 * 1024  # the send queue's byte bound is at least this
_CLOSE_GRACE: Final = 2.0  # seconds a closing connection has to flush before it is cut

_ids = itertools.count(1)


class State(enum.IntEnum):
    """Where a connection is in its life; a connection only ever moves forward, except between
    CONNECTING and AUTHENTICATING, and between AUTHENTICATED and EXPIRED."""

    NEW = 0  # built by the listener factory; the handshake is not complete
    CONNECTING = 1  # open, not authenticated; closed when the auth deadline passes
    AUTHENTICATING = 2  # not authenticated, an auth is queued: later events wait behind it
    AUTHENTICATED = 3  # in the hub; the deadline (if any) is the token's expiry
    EXPIRED = 4  # in the hub, the token expired or was refused: closed at the deadline
    CLOSING = 5  # the close frame is sent; waiting for the client's (a grace period at most)
    CLOSED = 6  # the socket is gone


_CLOSING: Final = State.CLOSING  # read on every frame and every write


class Dispatch(Protocol):
    """What a connection hands its client's events to (:class:`gogate.dispatch.Dispatcher`)."""

    def receive(self, client: Connection, text: str) -> None: ...  # one whole text message

    async def run(self, client: Connection, event: Inbound) -> None: ...  # a queued event


class Connection(WSListener):  # type: ignore[misc]
    __slots__ = ("_abort", "_deadline", "_dispatch", "_flusher", "_fragments", "_hub",
                 "_inbox", "_inbox_task", "_metrics", "_registry", "_settings", "_write_timer",
                 "auth_failures", "bucket", "client", "conn_id", "last_ping", "last_rx", "sink",
                 "state", "token", "transport", "user")

    transport: WSTransport  # set when the handshake completes
    sink: Sink  # set when the handshake completes

    def __init__(self, settings: Settings, dispatch: Dispatch, hub: Hub, flusher: Flusher,
                 registry: Registry[Connection], metrics: Metrics) -> None:
        super().__init__()
        self._settings = settings
        self._dispatch = dispatch
        self._hub = hub
        self._flusher = flusher
        self._registry = registry
        self._metrics = metrics
        self.conn_id = next(_ids)
        self.client: object = None  # the client's address when proxies named it (gogate.proxy)
        self.state = State.NEW
        self.user: User | None = None
        self.token: str | None = None
        self.auth_failures = 0
        self.bucket = 0.0  # the rate limit's bucket (see gogate.policy.RateLimit): full
        self.last_rx = self.last_ping = time.monotonic()
        self._deadline = 0.0  # on the monotonic clock; 0 = none
        self._fragments: Fragments | None = None  # a fragmented message arriving
        self._inbox: deque[Inbound] | None = None
        self._inbox_task: asyncio.Task[None] | None = None
        self._write_timer: asyncio.TimerHandle | None = None  # a pause longer than WRITE_WAIT
        self._abort: asyncio.TimerHandle | None = None  # the cut of a closing socket

    @property
    def pending_write(self) -> asyncio.Task[None] | None:
        """The task running this connection's queued events, while there are any."""
        return self._inbox_task

    @property
    def user_id(self) -> int | None:
        return None if self.user is None else self.user.id

    @property
    def closing(self) -> bool:
        return self.state >= _CLOSING

    # --- picows callbacks (synchronous; never await, never keep a frame) -------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        settings = self._settings
        self.transport = transport
        raw = transport.underlying_transport
        raw.set_write_buffer_limits(high=settings.write_buffer_size)
        max_bytes = max(SEND_QUEUE_MIN_BYTES, 8 * settings.max_message_size)
        self.sink = Sink(raw.write, settings.send_queue_size, max_bytes, self, self._flusher)
        self.state = State.CONNECTING
        self._deadline = self.last_rx + settings.auth_timeout
        self._registry.add(self)
        self._metrics.lifecycle.connected(self.conn_id, raw, self.client)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.last_rx = time.monotonic()
        if self.state >= _CLOSING:  # the client's frames are dropped, until its close frame
            if frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()  # the client answered: the handshake is complete
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self.close(Close.PROTOCOL_ERROR)
            return
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            if self._fragments is not None:
                self.close(Close.PROTOCOL_ERROR)  # a new message inside a fragmented one
            elif frame.fin:
                try:
                    text = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self.close(Close.INVALID_UTF8)
                    return
                if self._registry.accepting:  # else shutting down: the close frame follows
                    self._dispatch.receive(self, text)
            else:
                self._fragments = Fragments(frame, self._settings.max_message_size)
        elif kind is WSMsgType.CONTINUATION:
            self._on_continuation(frame)
        elif kind is WSMsgType.CLOSE:
            if unsendable_close(frame):
                self.close(Close.PROTOCOL_ERROR)
            else:
                self._shut(WSCloseCode.OK, b"")  # the client closes: answer and let it go
        elif kind is WSMsgType.PING:
            if not self.sink.paused:  # a client that pings but does not read gets no pongs
                transport.send_pong(frame.get_payload_as_bytes())
        elif kind is WSMsgType.BINARY:
            self.close(Close.BINARY_FRAME)
        # PONG: counted as activity above.

    def _on_continuation(self, frame: WSFrame) -> None:
        if self._fragments is None:
            self.close(Close.PROTOCOL_ERROR)  # a continuation with nothing to continue
            return
        text = self._fragments.add(frame)
        if text is None:
            return
        self._fragments = None
        if isinstance(text, Close):
            self.close(text)
        elif self._registry.accepting:
            self._dispatch.receive(self, text)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.state = State.CLOSED
        self._stop_timers()
        self.sink.close(flush=False)
        self._registry.discard(self)
        self._leave_hub()
        if self._inbox is not None:
            self._inbox.clear()  # the event under way finishes; the ones behind it are dropped
        sent = transport.close_handshake.sent if transport.close_handshake else None
        self._metrics.lifecycle.disconnected(
            self.conn_id, self.user_id, None if sent is None else (sent.code.value, sent.reason))

    def pause_writing(self) -> None:
        if self.state is State.NEW:
            return
        self.sink.pause()
        if self._write_timer is None and self.state < _CLOSING:
            self._write_timer = asyncio.get_running_loop().call_later(
                self._settings.write_wait, self.close, Close.WRITE_TIMEOUT)

    def resume_writing(self) -> None:
        if self.state is State.NEW:
            return
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self.sink.resume()

    # --- what the dispatcher asks -----------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Write one encoded event to this connection (or queue it while the socket is full)."""
        if self.state < _CLOSING and not self.sink.send(build_frame(payload)):
            self.close(Close.SLOW_CONSUMER)

    def error(self, code: ErrorCode, message: str, ref: int | str | None) -> None:
        """Tell the client that an event failed: the gateway's one way of writing ``error``."""
        self._metrics.client_errors.labels(code).inc()
        self.send(encode_error(code, message, ref))

    def enqueue(self, event: Inbound) -> bool:
        """Queue an event behind the ones under way; ``False`` when too many are waiting."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        if len(inbox) >= MAX_PENDING_WRITES:
            return False
        if self.state is State.CONNECTING and isinstance(event, Auth):
            self.state = State.AUTHENTICATING
        inbox.append(event)
        if self._inbox_task is None:
            self._inbox_task = asyncio.get_running_loop().create_task(self._drain_inbox())
        return True

    async def _drain_inbox(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        try:
            while inbox and self.state < _CLOSING and self._registry.accepting:
                event = inbox.popleft()
                await self._dispatch.run(self, event)
                if self.state is State.AUTHENTICATING and not any(
                        isinstance(queued, Auth) for queued in inbox):
                    self.state = State.CONNECTING  # no auth left that could let the rest through
        finally:
            self._inbox_task = None
            if not inbox:
                self._inbox = None  # an idle connection keeps no queue

    def authenticated(self, user: User, token: str, expires_at: float | None) -> bool:
        """Accept the validated user, whose connection the hub now holds, or a fresh token of
        the same user. ``False`` when the connection is closing meanwhile."""
        if self.state >= _CLOSING:
            return False
        if self.user is None:
            self.user = user
            self._metrics.lifecycle.authenticated_as(self.conn_id, user.id)
        self.token = token
        self.state = State.AUTHENTICATED
        self._deadline = 0.0 if expires_at is None else (
            time.monotonic() + max(0.0, expires_at - time.time()))
        return True

    def expire(self, notify: bool) -> None:
        """The token expired (``notify``: the client is told) or the backend refused it: a
        fresh auth within ``AUTH_TIMEOUT``, or the connection closes."""
        if self.state is not State.AUTHENTICATED:
            return
        self.state = State.EXPIRED
        self._deadline = time.monotonic() + self._settings.auth_timeout
        if notify:
            self.error(ErrorCode.AUTH_EXPIRED, "Token expired: send auth with a fresh token",
                       None)

    # --- the worker's heartbeat -------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Called every tick of the worker's heartbeat (a second at most): the deadline of the
        state; a ping every ``PING_PERIOD``; a drop after ``PONG_WAIT`` of silence."""
        state = self.state
        if state >= _CLOSING:
            return
        deadline = self._deadline
        if deadline and now >= deadline:
            if state is State.AUTHENTICATED:
                self.expire(notify=True)
            else:
                self.close(Close.AUTH_EXPIRED if state is State.EXPIRED else Close.AUTH_TIMEOUT)
                return
        settings = self._settings
        if now - self.last_rx >= settings.pong_wait:
            self.close(Close.PING_TIMEOUT)
        elif now - self.last_ping >= settings.ping_period:
            self.last_ping = now
            self.transport.send_ping()

    # --- closing ----------------------------------------------------------------------------

    def close(self, reason: Close, text: str = "") -> None:
        """Send a close frame with the reason (``text``, if given, as its words), then close."""
        if self.state >= _CLOSING or self.state is State.NEW:
            return
        metrics = self._metrics
        metrics.closes.labels(reason.name.lower()).inc()
        if reason in (Close.SLOW_CONSUMER, Close.WRITE_TIMEOUT):
            metrics.slow_consumers.inc()
        code, text = reason.value.code, text or reason.value.reason
        metrics.lifecycle.closing(self.conn_id, self.user_id, code, text)
        self._shut(WSCloseCode(code), text.encode())

    def _shut(self, code: WSCloseCode, reason: bytes) -> None:
        """Leave the hub and send the close frame after what was already written. The socket
        is let go once the client answers with its close frame or ends its stream, and cut if
        neither happens within the grace period. Until then the client's bytes are read (and
        dropped): a socket closed on unread bytes is reset, and a reset can destroy the close
        frame before the client reads it."""
        self.state = State.CLOSING
        self._stop_timers()
        self.sink.close()
        self._leave_hub()
        transport = self.transport
        transport.send_close(code, reason)
        if transport.close_handshake.recv is not None:
            transport.disconnect()  # the client closed first: the handshake is complete
        self._abort = asyncio.get_running_loop().call_later(_CLOSE_GRACE, _abort, transport)

    def _leave_hub(self) -> None:
        if self.user is not None:
            self._hub.leave(self.user.id, self.sink)

    def _stop_timers(self) -> None:
        """The deadline, the write timer and the cut of a closing socket: none of them is due
        any more."""
        self._deadline = 0.0
        for timer in (self._write_timer, self._abort):
            if timer is not None:
                timer.cancel()
        self._write_timer = self._abort = None


def _abort(transport: WSTransport) -> None:
    if not transport.is_disconnected:
        transport.disconnect(graceful=False)
