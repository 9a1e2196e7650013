"""One client WebSocket: the picows listener, its state machine and its timers.

States: *connecting* (until ``auth_success``; closed 1008 after ``AUTH_TIMEOUT``),
*authenticated* (registered in the hub; receives broadcasts), *closing*. Frames are decoded inside
``on_ws_frame`` and never kept; writes go to an ordered inbox that one task drains, so a
connection's writes reach the backend in arrival order while ``typing`` runs at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import Final

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from gogate.errors import Close, ErrorCode
from gogate.events import (
    EVENT_NAMES,
    Auth,
    Inbound,
    InvalidFrame,
    Typing,
    decode_inbound,
    encode_error,
)
from gogate.handlers import Services
from gogate.log import conn_log
from gogate.models import User
from gogate_fast import Sink, build_frame

__all__ = ["Connection", "Registry"]

MAX_FAILED_AUTH: Final = 3
MAX_PENDING_WRITES: Final = 256  # writes waiting in one connection's inbox
SEND_QUEUE_MIN_BYTES: Final = 16 * 1024 * 1024  # the send queue's byte bound is at least this
_CLOSE_GRACE: Final = 2.0  # seconds a closing connection has to flush before it is cut

_ids = itertools.count(1)


class Registry:
    """Every open connection of this worker, for heartbeats, limits and shutdown."""

    def __init__(self) -> None:
        self.open: set[Connection] = set()
        self.accepting = True


class Connection(WSListener):  # type: ignore[misc]
    __slots__ = ("_auth_pending", "_bucket", "_bucket_at", "_deadline", "_expiry",
                 "_fragments", "_inbox", "_inbox_task", "_registry", "_svc", "_write_timer",
                 "auth_failures", "closing", "conn_id", "last_ping", "last_rx",
                 "sink", "token", "transport", "user")

    def __init__(self, svc: Services, registry: Registry) -> None:
        super().__init__()
        self._svc = svc
        self._registry = registry
        self.conn_id = next(_ids)
        self.transport: WSTransport | None = None
        self.sink: Sink = Sink(_discard, 1, 1)
        self.user: User | None = None
        self.token: str | None = None
        self.auth_failures = 0
        self.closing = False
        self.last_rx = self.last_ping = time.monotonic()
        self._auth_pending = 0
        self._bucket = float(svc.settings.rate_limit_burst)
        self._bucket_at = self.last_rx
        self._fragments: bytearray | None = None
        self._inbox: deque[Inbound] | None = None
        self._inbox_task: asyncio.Task[None] | None = None
        # Deadlines on the monotonic clock, checked by the worker's heartbeat (0 = none): the
        # authentication deadline and the token's expiry.
        self._deadline = 0.0
        self._expiry = 0.0
        self._write_timer: asyncio.TimerHandle | None = None

    @property
    def pending_write(self) -> asyncio.Task[None] | None:
        """The task running this connection's writes, while there are any."""
        return self._inbox_task

    @property
    def user_id(self) -> int | None:
        return None if self.user is None else self.user.id

    # --- picows callbacks (synchronous; never await, never keep a frame) -------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        settings = self._svc.settings
        self.transport = transport
        raw = transport.underlying_transport
        raw.set_write_buffer_limits(high=settings.write_buffer_size)
        max_bytes = max(SEND_QUEUE_MIN_BYTES, 8 * settings.max_message_size)
        self.sink = Sink(raw.write, settings.send_queue_size, max_bytes, self,
                         self._svc.hub.flusher)
        self._registry.open.add(self)
        self._deadline = self.last_rx + settings.auth_timeout
        if conn_log.isEnabledFor(logging.INFO):  # the peer's address is looked up for the log
            peer = raw.get_extra_info("peername")
            remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
            conn_log.info("connected", extra={"conn_id": self.conn_id, "remote": remote})

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.last_rx = time.monotonic()
        if self.closing:
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
                self._on_message(text)
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif kind is WSMsgType.CONTINUATION:
            self._on_continuation(frame)
        elif kind is WSMsgType.CLOSE:
            self._shut(WSCloseCode.OK, b"")  # the client closes: answer and let the socket go
        elif kind is WSMsgType.PING:
            if not self.sink.paused:  # a client that pings but does not read gets no pongs
                transport.send_pong(frame.get_payload_as_bytes())
        elif kind is WSMsgType.BINARY:
            self.close(Close.BINARY_FRAME)
        # PONG: counted as activity above.

    def _on_continuation(self, frame: WSFrame) -> None:
        fragments = self._fragments
        if fragments is None:
            self.close(Close.PROTOCOL_ERROR)  # a continuation with nothing to continue
            return
        if len(fragments) + frame.payload_size > self._svc.settings.max_message_size:
            self._fragments = None
            self.close(Close.MESSAGE_TOO_BIG)
            return
        fragments += frame.get_payload_as_memoryview()
        if frame.fin:
            self._fragments = None
            try:
                text = fragments.decode("utf-8")
            except UnicodeDecodeError:
                self.close(Close.INVALID_UTF8)
                return
            self._on_message(text)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closing = True
        self._cancel_timers()  # the cut of a closing socket included
        self.sink.close(flush=False)
        self._registry.open.discard(self)
        self._svc.hub.remove(self)
        if self._inbox is not None:
            self._inbox.clear()  # the write under way finishes; the ones behind it are dropped
        sent = transport.close_handshake.sent if transport.close_handshake else None
        conn_log.info("disconnected", extra={
            "conn_id": self.conn_id, "user_id": self.user_id,
            "code": int(sent.code.value) if sent is not None else None,
            "reason": sent.reason if sent is not None and sent.reason else None})

    def pause_writing(self) -> None:
        self.sink.pause()
        if self._write_timer is None and not self.closing:
            self._write_timer = asyncio.get_running_loop().call_later(
                self._svc.settings.write_wait, self.close, Close.WRITE_TIMEOUT)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self.sink.resume()

    # --- inbound events -------------------------------------------------------------------

    def _on_message(self, text: str) -> None:
        svc = self._svc
        if not self._registry.accepting:
            return  # shutting down: the close frame follows
        try:
            event = decode_inbound(text)
        except InvalidFrame as exc:
            self._reject(exc)
            return
        svc.metrics.event_in(EVENT_NAMES[type(event)])
        if not self._take_token():
            self._error(ErrorCode.RATE_LIMITED, "Rate limit exceeded", event.ref)
            return
        if self.user is None and self._auth_pending == 0 and not isinstance(event, Auth):
            self._error(ErrorCode.AUTH_REQUIRED, "Authentication required", event.ref)
            return
        if self.user is not None:
            # typing and a fresh auth never wait behind a write in flight
            if isinstance(event, Typing):
                if not svc.typing_now(self, event):
                    svc.spawn(svc.handle(self, event))
                return
            if isinstance(event, Auth):
                svc.spawn(svc.handle(self, event))
                return
        self._enqueue(event)

    def _reject(self, exc: InvalidFrame) -> None:
        self._svc.metrics.event_in("invalid")
        if not self._take_token():
            self._error(ErrorCode.RATE_LIMITED, "Rate limit exceeded", exc.ref)
        elif (self.user is None and exc.code is not ErrorCode.INVALID_JSON
              and exc.event != "auth"):
            self._error(ErrorCode.AUTH_REQUIRED, "Authentication required", exc.ref)
        else:
            self._error(exc.code, exc.message, exc.ref)

    def _take_token(self) -> bool:
        """The per-connection token bucket: ``RATE_LIMIT`` per second, ``RATE_LIMIT_BURST``
        at most."""
        rate = self._svc.settings.rate_limit
        if rate <= 0:
            return True
        now = time.monotonic()
        burst = self._svc.settings.rate_limit_burst
        self._bucket = min(burst, self._bucket + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if self._bucket < 1.0:
            return False
        self._bucket -= 1.0
        return True

    def _enqueue(self, event: Inbound) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        if len(inbox) >= MAX_PENDING_WRITES:
            self._error(ErrorCode.RATE_LIMITED, "Too many requests pending", event.ref)
            return
        if isinstance(event, Auth):
            self._auth_pending += 1
        inbox.append(event)
        if self._inbox_task is None:
            self._inbox_task = asyncio.get_running_loop().create_task(self._drain_inbox())

    async def _drain_inbox(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        try:
            while inbox and not self.closing and self._registry.accepting:
                event = inbox.popleft()
                try:
                    await self._svc.handle(self, event)
                finally:
                    if isinstance(event, Auth):
                        self._auth_pending -= 1
        finally:
            self._inbox_task = None
            if not inbox:
                self._inbox = None  # an idle connection keeps no queue

    # --- what handlers call -----------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Write one encoded event to this connection (or queue it while the socket is full)."""
        if not self.closing and not self.sink.send(build_frame(payload)):
            self.close(Close.SLOW_CONSUMER)

    def _error(self, code: ErrorCode, message: str, ref: int | str | None) -> None:
        self._svc.metrics.client_errors.labels(code).inc()
        self.send(encode_error(code, message, ref))

    def authenticated(self, user: User, token: str, expires_at: float | None) -> bool:
        """Accept the validated user: register on first auth (its slot already acquired),
        refresh the token on re-auth. ``False`` when the connection is closing meanwhile."""
        if self.closing:
            return False
        svc = self._svc
        if self.user is None:
            self.user = user
            svc.hub.add(self)
            conn_log.info("authenticated", extra={"conn_id": self.conn_id, "user_id": user.id})
        self.token = token
        self._deadline = 0.0
        self._expiry = 0.0
        if expires_at is not None:
            self._expiry = time.monotonic() + max(0.0, expires_at - time.time())
        return True

    def refuse(self, limit: int) -> None:
        """The user already holds ``limit`` connections in the deployment."""
        self._error(ErrorCode.TOO_MANY_CONNECTIONS,
                    f"Too many connections for this user (limit {limit})", None)
        self.close(Close.TOO_MANY_CONNECTIONS)

    def auth_failed(self) -> None:
        self.auth_failures += 1
        if self.auth_failures >= MAX_FAILED_AUTH:
            self.close(Close.AUTH_FAILED)

    def token_refused(self) -> None:
        """The backend answered 401 to a user call: the token needs replacing."""
        self._on_expired(notify=False)

    # --- timers -----------------------------------------------------------------------------

    def _on_expired(self, notify: bool = True) -> None:
        self._expiry = 0.0
        if self.closing:
            return
        if notify:
            self._error(ErrorCode.AUTH_EXPIRED,
                        "Token expired: send auth with a fresh token", None)
        if not self._deadline:
            self._deadline = time.monotonic() + self._svc.settings.auth_timeout

    def heartbeat(self, now: float) -> None:
        """Called every tick of the worker's heartbeat (a second at most): authentication
        deadlines and token expiry; a ping every ``PING_PERIOD``; a drop after ``PONG_WAIT``
        of silence. Deadlines live here rather than in a timer per connection."""
        settings = self._svc.settings
        if self.closing or self.transport is None:
            return
        if self._deadline and now >= self._deadline:
            self.close(Close.AUTH_TIMEOUT if self.user is None else Close.AUTH_EXPIRED)
            return
        if self._expiry and now >= self._expiry:
            self._on_expired()
        if now - self.last_rx >= settings.pong_wait:
            self.close(Close.PING_TIMEOUT)
        elif now - self.last_ping >= settings.ping_period:
            self.last_ping = now
            self.transport.send_ping()

    def _cancel_timers(self) -> None:
        self._deadline = self._expiry = 0.0
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # --- closing ----------------------------------------------------------------------------

    def close(self, reason: Close) -> None:
        """Send a close frame with the reason's code and let the socket flush, then cut it."""
        if self.closing or self.transport is None:
            return
        metrics = self._svc.metrics
        metrics.closes.labels(reason.name.lower()).inc()
        if reason in (Close.SLOW_CONSUMER, Close.WRITE_TIMEOUT):
            metrics.slow_consumers.inc()
        code, text, _ = reason.value
        conn_log.info("closing", extra={"conn_id": self.conn_id, "user_id": self.user_id,
                                        "code": code, "reason": text})
        self._shut(WSCloseCode(code), text.encode())

    def _shut(self, code: WSCloseCode, reason: bytes) -> None:
        """Leave the hub, send the close frame after what was already written, and cut the
        socket if it has not flushed within the grace period."""
        self.closing = True
        self._cancel_timers()
        self.sink.close()
        self._svc.hub.remove(self)
        transport = self.transport
        assert transport is not None
        transport.send_close(code, reason)
        transport.disconnect()
        # reuses the write timer's slot: it was cancelled above and the socket writes no more
        self._write_timer = asyncio.get_running_loop().call_later(_CLOSE_GRACE, _abort,
                                                                  transport)


def _abort(transport: WSTransport) -> None:
    if not transport.is_disconnected:
        transport.disconnect(graceful=False)


def _discard(_: bytes) -> None:
    """Writes before the socket is connected go nowhere."""
