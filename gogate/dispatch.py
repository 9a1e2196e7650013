"""From a client's text to the flow of its event: the rate limit, the auth gate, the typing fast
path, and the one place where a failed event becomes an ``error`` event.

A text message is decoded once and counted. Then, in this order: over the rate limit it is
answered RATE_LIMITED; an event that needs an authenticated connection and has none is answered
AUTH_REQUIRED (:meth:`Dispatcher._gate` decides that, alone); a ``typing`` whose chat's member
list is cached is passed on at once; a ``typing`` or a fresh ``auth`` of an authenticated
connection runs on its own, never behind a write; everything else queues in the connection's
inbox and runs in its turn (:meth:`Dispatcher.run`). A flow that raises
:class:`~gogate.errors.ClientError` is answered by :meth:`Dispatcher._fail`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from gogate import handlers
from gogate.auth import Authenticator, TokenRefused
from gogate.auth.verifier import refusal
from gogate.config import Settings
from gogate.connection import Connection, State
from gogate.errors import AuthExpired, ClientError, Close, ErrorCode
from gogate.events import (
    EVENT_NAMES,
    AddReaction,
    Auth,
    AuthSuccessData,
    Inbound,
    InvalidFrame,
    MarkRead,
    SendMessage,
    Typing,
    decode_inbound,
    encode,
)
from gogate.handlers import Context
from gogate.hub import Grant, Hub
from gogate.log import conn_log
from gogate.models import User
from gogate.policy import RateLimit
from gogate.recovery import Recovery

__all__ = ["MAX_FAILED_AUTH", "Dispatcher"]

MAX_FAILED_AUTH: Final = 3  # refused tokens before the connection is closed

Flow = Callable[[Context, User, str, Any], Awaitable[bytes | None]]

_FLOWS: Final[dict[type, Flow]] = {
    SendMessage: handlers.send_message,
    AddReaction: handlers.add_reaction,
    MarkRead: handlers.mark_read,
    Typing: handlers.typing,
}

_AUTHENTICATING: Final = State.AUTHENTICATING
_AUTHENTICATED: Final = State.AUTHENTICATED
_EXPIRED: Final = State.EXPIRED
_CLOSING: Final = State.CLOSING


class Dispatcher:
    """The client events of every connection of one worker go through here."""

    def __init__(self, settings: Settings, ctx: Context, hub: Hub, auth: Authenticator,
                 recovery: Recovery) -> None:
        self._ctx = ctx
        self._hub = hub
        self._recovery = recovery
        self._auth = auth
        self._metrics = ctx.metrics
        self._rate = RateLimit(settings.rate_limit, settings.rate_limit_burst)
        self._per_user = settings.max_connections_per_user
        self.tasks: set[asyncio.Task[None]] = set()  # flows running on their own

    def receive(self, client: Connection, text: str) -> None:
        """One text message of ``client``: answer it now, run it on its own, or queue it."""
        try:
            event = decode_inbound(text)
        except InvalidFrame as exc:
            self._metrics.event_in("invalid")
            if self._within_rate(client, exc.ref) and self._gate(client, exc.event, exc.ref,
                                                                 may_wait=False):
                self._fail(client, exc, exc.ref)
            return
        kind = type(event)
        self._metrics.event_in(EVENT_NAMES[kind])
        if not self._within_rate(client, event.ref):
            return
        state = client.state
        if state is _AUTHENTICATED or state is _EXPIRED:
            if isinstance(event, Typing):
                self._typing(client, event)
                return
            if isinstance(event, Auth):
                self._spawn(self.run(client, event))
                return
        elif not self._gate(client, EVENT_NAMES[kind], event.ref, may_wait=True):
            return
        if not client.enqueue(event):
            client.error(ErrorCode.RATE_LIMITED, "Too many requests pending", event.ref)

    async def run(self, client: Connection, event: Inbound) -> None:
        """Run one event's flow and answer the client: the flow's reply, or its failure."""
        token = client.token
        try:
            if isinstance(event, Auth):
                await self._authenticate(client, event)
                return
            if not self._gate(client, EVENT_NAMES[type(event)], event.ref, may_wait=False):
                return
            assert client.user is not None and token is not None
            reply = await _FLOWS[type(event)](self._ctx, client.user, token, event)
        except ClientError as exc:
            if isinstance(exc, AuthExpired) and token is not None:
                self._auth.forget(token)  # the backend refuses it now: never reuse it
                if client.token == token:
                    client.expire(notify=False)  # unless a fresh auth replaced the token
            self._fail(client, exc, event.ref)
            return
        except Exception:
            conn_log.exception("event failed", extra={"conn_id": client.conn_id,
                                                      "event": type(event).__name__})
            self._fail(client, ClientError("Internal error", ErrorCode.INTERNAL_ERROR),
                       event.ref)
            return
        if reply is not None:
            client.send(reply)

    # --- the rules of the door ----------------------------------------------------------------

    def _within_rate(self, client: Connection, ref: int | str | None) -> bool:
        """Take one token of the client's bucket, or answer RATE_LIMITED."""
        full_at = self._rate.take(client.bucket, client.last_rx)
        if full_at is None:
            client.error(ErrorCode.RATE_LIMITED, "Rate limit exceeded", ref)
            return False
        client.bucket = full_at
        return True

    def _gate(self, client: Connection, event: str | None, ref: int | str | None, *,
              may_wait: bool) -> bool:
        """The auth gate, the one place that answers "Authentication required". Everything
        but ``auth`` (and a frame too broken to name its event, which has its own error)
        needs an authenticated connection, or, for an event that ``may_wait`` in the inbox,
        an auth queued ahead of it."""
        if event is None or event == "auth":
            return True
        state = client.state
        if state is _AUTHENTICATED or state is _EXPIRED or (may_wait and
                                                            state is _AUTHENTICATING):
            return True
        if state >= _CLOSING:  # nothing more is said to a closing connection
            return client.user is not None
        client.error(ErrorCode.AUTH_REQUIRED, "Authentication required", ref)
        return False

    def _fail(self, client: Connection, exc: ClientError, ref: int | str | None) -> None:
        """The one place where a failed event becomes an ``error`` event."""
        client.error(exc.code, exc.message, ref)

    async def _authenticate(self, client: Connection, event: Auth) -> None:
        """``auth``: ask who holds the token (verified here, or by the backend); on the first
        success take one of the user's connection slots and enter the hub; answer
        ``auth_success``. A revocation of the user that arrives while this waits keeps the
        connection out: it was not in the hub yet when the user's connections were closed."""
        token = event.data.token
        begun = time.time()
        try:
            user, expires = await self._auth.authenticate(token)
        except ClientError as exc:
            if exc.code is not ErrorCode.AUTH_FAILED:
                raise
            self._refuse(client, exc, event.ref)
            return
        if client.user is not None and client.user.id != user.id:
            raise ClientError("Already authenticated as another user",
                              ErrorCode.ALREADY_AUTHENTICATED)
        limit = self._per_user
        entering = client.user is None
        since = event.data.since if entering else None  # ignored on an authenticated one
        grant: Grant | None = None
        if entering and (grant := await self._hub.enter(user.id, client.sink, limit,
                                                        since)) is None:
            self._fail(client, ClientError(f"Too many connections for this user (limit {limit})",
                                           ErrorCode.TOO_MANY_CONNECTIONS), None)
            client.close(Close.TOO_MANY_CONNECTIONS)
            return
        # From here to authenticated() nothing waits, so no revocation can come in between.
        if self._auth.revoked_during(token, user.id, begun):
            if entering:
                self._hub.leave(user.id, client.sink)
            self._refuse(client, refusal("token revoked"), event.ref)
            return
        if client.authenticated(user, token, expires):
            stream, recovered = Recovery.greeting(client.sink, grant, since)
            client.send(encode("auth_success", AuthSuccessData(
                user.id, user.name, user.phone, stream, recovered), event.ref))
            if grant is not None:
                self._recovery.begin(client.sink, user.id, grant, since)

    def _refuse(self, client: Connection, exc: ClientError, ref: int | str | None) -> None:
        """A refused token: answered AUTH_FAILED, counted as a failed attempt; the third one
        closes the connection."""
        reason = exc.reason if isinstance(exc, TokenRefused) else "backend"
        self._metrics.auth_refusals.labels(reason).inc()
        self._fail(client, exc, ref)
        client.auth_failures += 1
        if client.auth_failures >= MAX_FAILED_AUTH:
            client.close(Close.AUTH_FAILED)

    def _typing(self, client: Connection, event: Typing) -> None:
        """``typing`` at once when its chat's member list is cached and holds the user; else
        on its own, waiting for the list."""
        chat_id = event.data.chat_id
        members = self._ctx.members.fresh(chat_id)
        user = client.user
        if members is None or chat_id <= 0 or user is None or user.id not in members:
            self._spawn(self.run(client, event))
            return
        reply = handlers.typing_cached(self._ctx, user, event, members)
        if reply is not None:
            client.send(reply)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
