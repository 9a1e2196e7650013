"""Who may open a WebSocket on this worker: the origin rule (``ALLOWED_ORIGINS``), the worker's
capacity (``MAX_CONNECTIONS``; nothing while it drains) and the pace of new connections
(``MAX_CONNECT_RATE``).

A refused upgrade costs one short HTTP answer and no connection, so a reconnect storm beyond
the admitted pace cannot starve the connections already open. The answers are built once, when
the module loads: a refusal allocates nothing here and is counted (and logged only at DEBUG)
by the worker's :class:`~gogate.lifecycle.Lifecycle`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Final

from picows import WSUpgradeResponse, WSUpgradeResponseWithListener

from gogate.config import Settings
from gogate.lifecycle import Lifecycle
from gogate.policy import RateLimit

__all__ = ["Admission", "OriginPolicy", "Refusal"]


class _Rendered(WSUpgradeResponse):
    """An error response rendered once. picows renders a response each time it sends it (and
    adds a ``Content-Length`` header each time), so the one shared by every client refused for
    the same reason keeps its bytes instead: the same bytes, sent as they are."""

    __slots__ = ("_bytes",)
    _bytes: bytearray

    def to_bytes(self) -> bytearray:
        return self._bytes


class Refusal:
    """The HTTP answer to an upgrade that is not admitted. ``answer`` is what the router hands
    to picows: one response object for every client refused for the same reason."""

    __slots__ = ("answer", "body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()
                 ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        plain = WSUpgradeResponse.create_error_response(
            status, body, [*headers, ("Connection", "close")])  # picows closes after it
        response = _Rendered()
        response.version, response.status, response.body = plain.version, plain.status, body
        response._bytes = plain.to_bytes()
        response.headers = plain.headers
        self.answer = WSUpgradeResponseWithListener(response, None)


FORBIDDEN_ORIGIN: Final = Refusal(403, b"403 Forbidden: origin not allowed\n")
UNAVAILABLE: Final = Refusal(503, b"503 Service Unavailable: try again later\n",
                             (("Retry-After", "5"),))
TOO_FAST: Final = Refusal(503, b"503 Service Unavailable: too many new connections, "
                               b"retry in a second\n", (("Retry-After", "1"),))


class OriginPolicy:
    """``ALLOWED_ORIGINS``: exact values or ``*`` wildcards (``https://*.example.com``; a
    lone ``*`` allows every origin); empty allows every origin. A request without an
    ``Origin`` header (not a browser) is allowed."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.open = not patterns or "*" in patterns
        self._regex = re.compile(
            "|".join(re.escape(p.lower()).replace(r"\*", "[^/]*") for p in patterns) or "$^")

    def allows(self, origin: str | None) -> bool:
        return self.open or origin is None or self._regex.fullmatch(origin.lower()) is not None


class Admission:
    """The checks of one worker's upgrades, in order: origin, capacity, pace.

    The pace is a token bucket refilled at ``MAX_CONNECT_RATE`` per second that holds as many
    tokens as one second brings (at least one), kept as one float
    (:class:`~gogate.policy.RateLimit`); only upgrades that pass every other check take a
    token.
    """

    def __init__(self, settings: Settings, lifecycle: Lifecycle) -> None:
        self.origins = OriginPolicy(settings.allowed_origins)
        self._limit = settings.max_connections
        rate = settings.max_connect_rate
        self._pace = RateLimit(rate, max(1, int(rate)))
        self._bucket = 0.0  # full
        self._lifecycle = lifecycle

    def refusal(self, origin: str | None, open_now: int, accepting: bool) -> Refusal | None:
        """The answer to an upgrade from ``origin`` while ``open_now`` connections are open;
        None when it is admitted."""
        lifecycle = self._lifecycle
        if not self.origins.allows(origin):
            lifecycle.refuse("origin", (origin or "")[:100])
            return FORBIDDEN_ORIGIN
        if not accepting:
            lifecycle.refuse("draining")
            return UNAVAILABLE
        if self._limit and open_now >= self._limit:
            lifecycle.refuse("max_connections")
            return UNAVAILABLE
        full_at = self._pace.take(self._bucket, time.monotonic())
        if full_at is None:
            lifecycle.refuse("connect_rate")
            return TOO_FAST
        self._bucket = full_at
        return None
