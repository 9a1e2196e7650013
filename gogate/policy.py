"""The gateway's pure rules: how often a client may send, how often a typing state is passed on,
and which chat a relayed message belongs to.

Nothing here does I/O or knows a connection; each rule takes the time it needs as an argument or
from a clock it was given, so that it can be tested by moving the clock by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["RateLimit", "RecentMessages", "TypingGate"]

TYPING_REPEAT: Final = 1.0  # seconds between broadcasts of the same typing state


class RateLimit:
    """The token bucket of every connection: ``rate`` events per second, ``burst`` at most in
    a row (``rate`` 0 = no limit).

    A bucket is one float kept by its owner: the moment it will be full again (the "theoretical
    arrival time" of the generic cell rate algorithm, equivalent to a bucket refilled at
    ``rate`` up to ``burst``). A new bucket is ``0.0``: full.
    """

    __slots__ = ("_interval", "_tolerance")

    def __init__(self, rate: float, burst: int) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._tolerance = (burst - 1) * self._interval

    def take(self, full_at: float, now: float) -> float | None:
        """Take one token at ``now`` from the bucket that is full at ``full_at``: the bucket's
        new ``full_at``, or None when it holds less than one token (nothing is taken)."""
        interval = self._interval
        if not interval:
            return full_at
        if full_at < now:
            full_at = now
        if full_at - now > self._tolerance:
            return None
        return full_at + interval


class RecentMessages:
    """Chat ids of the messages this worker relayed, so that reactions and read receipts
    without a ``chat_id`` still reach the chat. Bounded to the latest ``capacity`` messages
    (about 100 bytes each); the oldest are forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._chats: dict[int, int] = {}
        self._capacity = capacity

    def remember(self, message_id: int, chat_id: int) -> None:
        chats = self._chats
        chats[message_id] = chat_id
        if len(chats) > self._capacity:
            del chats[next(iter(chats))]

    def chat_of(self, message_id: int) -> int | None:
        return self._chats.get(message_id)


class TypingGate:
    """Lets a typing state through at most once a second per user and chat; a change of state
    always passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: dict[tuple[int, int], tuple[bool, float]] = {}
        self._clock = clock

    def allow(self, user_id: int, chat_id: int, is_typing: bool) -> bool:
        now = self._clock()
        key = (user_id, chat_id)
        last = self._last.get(key)
        if last is not None and last[0] == is_typing and now - last[1] < TYPING_REPEAT:
            return False
        self._last[key] = (is_typing, now)
        return True

    def prune(self) -> None:
        """Forget states old enough that they no longer hold anything back."""
        horizon = self._clock() - TYPING_REPEAT
        for key in [k for k, (_, at) in self._last.items() if at < horizon]:
            del self._last[key]

