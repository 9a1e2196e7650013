"""What happens to the connections of one worker: counted, logged one line each at DEBUG, and
summed up at INFO every :data:`SUMMARY_PERIOD` seconds when anything happened.

At thousands of connections a log line per connect costs more CPU than the handshake, so the
per-connection lines are DEBUG, and whether DEBUG is on is read once, when the worker starts
(the level is set before): with it off, a connection costs four integer increments here and
no address lookup, no dict, no record. The counts are plain integers, served on ``/metrics``
by :class:`gogate.metrics.Metrics` at scrape time.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

from gogate.log import conn_log, server_log

__all__ = ["SUMMARY_PERIOD", "Lifecycle", "Peer"]

SUMMARY_PERIOD: Final = 10.0  # seconds between INFO summaries (read at every beat)
DROPPED: Final = 1006  # the code of a connection that went without a close frame from gogate


class Peer(Protocol):
    """The transport of a new connection, asked for its address only when DEBUG is on."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Lifecycle:
    """The counts of one worker since it started, and the per-connection DEBUG lines."""

    __slots__ = ("_last", "authenticated", "closed", "debug", "opened", "refused")

    def __init__(self) -> None:
        self.debug = conn_log.isEnabledFor(logging.DEBUG)
        self.opened = 0  # handshakes completed
        self.authenticated = 0  # connections authenticated for the first time
        self.closed: dict[int, int] = {}  # connections gone, by the close code gogate sent
        self.refused: dict[str, int] = {}  # upgrades answered with an HTTP error, by reason
        self._last: tuple[int, int, dict[int, int], dict[str, int]] = (0, 0, {}, {})

    def connected(self, conn_id: int, peer: Peer, client: object = None) -> None:
        """``client``: the client's address as trusted proxies named it (None: the peer's)."""
        self.opened += 1
        if self.debug:
            if client is None:
                address = peer.get_extra_info("peername")
                client = (f"{address[0]}:{address[1]}" if isinstance(address, tuple)
                          else str(address or ""))
            conn_log.debug("connected", extra={"conn_id": conn_id, "remote": str(client)})

    def authenticated_as(self, conn_id: int, user_id: int) -> None:
        self.authenticated += 1
        if self.debug:
            conn_log.debug("authenticated", extra={"conn_id": conn_id, "user_id": user_id})

    def closing(self, conn_id: int, user_id: int | None, code: int, reason: str) -> None:
        if self.debug:
            conn_log.debug("closing", extra={"conn_id": conn_id, "user_id": user_id,
                                             "code": code, "reason": reason})

    def disconnected(self, conn_id: int, user_id: int | None,
                     sent: tuple[int, str] | None) -> None:
        """Count the connection under the code of the close frame gogate sent (``sent``: its
        code and reason; 1006 when it sent none: the peer or the network dropped it)."""
        code, reason = (DROPPED, "") if sent is None else sent
        closed = self.closed
        closed[code] = closed.get(code, 0) + 1
        if self.debug:
            conn_log.debug("disconnected", extra={"conn_id": conn_id, "user_id": user_id,
                                                  "code": code, "reason": reason or None})

    def refuse(self, reason: str, detail: str | None = None) -> None:
        """An upgrade answered with an HTTP error instead of a WebSocket."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if self.debug:
            conn_log.debug("upgrade refused: %s", reason.replace("_", " "),
                           extra={"reason": detail})

    def summarise(self, open_now: int) -> str | None:
        """Log at INFO what happened since the last summary, and return the line; nothing
        (None) when nothing happened."""
        last_opened, last_authenticated, last_closed, last_refused = self._last
        opened = self.opened - last_opened
        authenticated = self.authenticated - last_authenticated
        closed = _since(self.closed, last_closed)
        refused = _since(self.refused, last_refused)
        if not (opened or authenticated or closed or refused):
            return None
        self._last = (self.opened, self.authenticated, dict(self.closed), dict(self.refused))
        line = (f"connections: {opened} opened, {authenticated} authenticated, "
                f"{sum(closed.values())} closed{_detail(closed)}, "
                f"{sum(refused.values())} refused{_detail(refused)}; {open_now} open")
        server_log.info(line)
        return line


def _since(now: dict[Any, int], before: dict[Any, int]) -> dict[Any, int]:
    return {key: count - before.get(key, 0) for key, count in sorted(now.items())
            if count != before.get(key, 0)}


def _detail(counts: dict[Any, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{key}: {count}" for key, count in counts.items()) + ")"
