"""The open connections of one worker.

They are kept in :data:`SLICES` slices by connection number, so that the heartbeat visits one
slice per step: with 100,000 connections, checking all of them at once would hold the event
loop for tens of milliseconds once per tick; a slice at a time, the same work is spread over
the whole tick.
"""

from __future__ import annotations

from typing import Final, Generic, Protocol, TypeVar

__all__ = ["SLICES", "Registry"]

SLICES: Final = 10  # heartbeat steps per tick


class Member(Protocol):
    """What the registry needs of a connection."""

    @property
    def conn_id(self) -> int: ...  # unique in the worker

    def heartbeat(self, now: float) -> None: ...


_Conn = TypeVar("_Conn", bound=Member)


class Registry(Generic[_Conn]):
    """Every open connection of this worker, for heartbeats, limits and shutdown."""

    def __init__(self) -> None:
        self.open: set[_Conn] = set()
        self.accepting = True
        self._slices: list[set[_Conn]] = [set() for _ in range(SLICES)]
        self._next = 0

    def add(self, conn: _Conn) -> None:
        self.open.add(conn)
        self._slices[conn.conn_id % SLICES].add(conn)

    def discard(self, conn: _Conn) -> None:
        self.open.discard(conn)
        self._slices[conn.conn_id % SLICES].discard(conn)

    def sweep(self, now: float) -> None:
        """One step of the heartbeat: the next slice's connections; every connection is
        visited once in :data:`SLICES` steps."""
        index = self._next
        self._next = (index + 1) % SLICES
        for conn in list(self._slices[index]):
            conn.heartbeat(now)
