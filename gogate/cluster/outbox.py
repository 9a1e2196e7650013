"""What a host owes the other hosts while Redis is unreachable: the events they are to receive,
kept in order until Redis is back, within bounds (at most 10,000 events, none older than 60 s),
so that an outage costs bounded memory and a late event is not delivered long after the fact.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

from gogate.cluster import bus

__all__ = ["OUTBOX_AGE", "OUTBOX_SIZE", "Outbox"]

OUTBOX_SIZE: Final = 10_000  # events kept for other hosts while Redis is unreachable
OUTBOX_AGE: Final = 60.0  # seconds such an event is kept


class Outbox:
    """The events other hosts are owed while Redis is unreachable, oldest first: at most
    ``size`` of them, none older than ``age`` seconds; what goes past either is dropped."""

    def __init__(self, size: int = OUTBOX_SIZE, age: float = OUTBOX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._age = age
        self._clock = clock
        self._events: deque[tuple[float, bus.Publish]] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, message: bus.Publish) -> int:
        """Keep one more event; returns how many were dropped to make room or for age."""
        dropped = self._expire()
        if len(self._events) >= self._size:
            self._events.popleft()
            dropped += 1
        self._events.append((self._clock(), message))
        return dropped

    def take(self) -> tuple[list[bus.Publish], int]:
        """Every event still owed, oldest first, and how many were dropped for age."""
        dropped = self._expire()
        events = [message for _, message in self._events]
        self._events.clear()
        return events, dropped

    def give_back(self, events: list[bus.Publish]) -> None:
        """Events taken but not delivered go back ahead of those kept since."""
        now = self._clock()
        self._events.extendleft((now, message) for message in reversed(events))
        while len(self._events) > self._size:
            self._events.popleft()

    def _expire(self) -> int:
        horizon = self._clock() - self._age
        events = self._events
        dropped = 0
        while events and events[0][0] <= horizon:
            events.popleft()
            dropped += 1
        return dropped
