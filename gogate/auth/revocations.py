"""Revoked users: after the backend disconnects user U at time T, U's tokens issued at or
before T are refused until they expire.

A record needs to live only as long as a token issued before it can still be valid: that is
``T`` plus the longest token lifetime. That lifetime is not known in advance, so a record is
kept for ``T + horizon``, where the horizon is 24 hours or the longest lifetime (``exp - iat``)
of a token the gateway accepted, whichever is longer. One record per revoked user, a few dozen
bytes: revocations are rare, so this costs nothing, and the records of users revoked long ago
are swept as new ones come.

A record knows nothing of tokens that carry no ``iat``: the caller sends such a token of a
revoked user to the backend, which has the last word.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Final

__all__ = ["MIN_HORIZON", "Revocations"]

# Seconds a revocation is remembered at least: longer than the lifetime of ordinary access
# tokens (LexikJWT's default is one hour).
MIN_HORIZON: Final = 24 * 3600.0


class Revocations:
    """The revocations in force on this worker. ``clock`` is wall-clock time, like ``iat``."""

    def __init__(self, horizon: float = MIN_HORIZON, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._horizon = horizon
        self._clock = clock
        # user id -> (revoked at, when this worker learned of it)
        self._since: dict[int, tuple[float, float]] = {}
        self._swept = clock()

    @property
    def horizon(self) -> float:
        """Seconds a record is kept after its revocation."""
        return self._horizon

    def saw_lifetime(self, lifetime: float) -> None:
        """Note the lifetime of a token that was accepted, so that no record is forgotten
        while a token issued before it can still be valid."""
        if lifetime > self._horizon:
            self._horizon = lifetime

    def revoke(self, user_id: int, at: float) -> None:
        """Refuse the user's tokens issued at or before ``at`` (seconds since the epoch)."""
        previous = self._since.get(user_id)
        if previous is not None:
            at = max(at, previous[0])
        self._since[user_id] = (at, self._clock())
        self._sweep()

    def since(self, user_id: int) -> float | None:
        """The latest revocation of the user still in force, or None."""
        record = self._since.get(user_id)
        if record is None:
            return None
        if record[0] + self._horizon <= self._clock():
            del self._since[user_id]
            return None
        return record[0]

    def arrived_since(self, user_id: int, moment: float) -> bool:
        """Whether a revocation of the user reached this worker at or after ``moment`` (this
        clock): an authentication that began before it may have been judged without it."""
        record = self._since.get(user_id)
        return record is not None and record[1] >= moment

    def refuses(self, user_id: int, issued_at: float) -> bool:
        """Whether a token of the user issued at ``issued_at`` (its ``iat``) is revoked."""
        at = self.since(user_id)
        return at is not None and issued_at <= at

    def __iter__(self) -> Iterator[tuple[int, float]]:
        """The records in force, as (user id, revoked at): what a worker that starts later
        must be given to refuse the same tokens."""
        self._sweep(force=True)
        return iter([(user_id, at) for user_id, (at, _) in self._since.items()])

    def __len__(self) -> int:
        return len(self._since)

    def _sweep(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._swept < 60:
            return
        self._swept = now
        horizon = now - self._horizon
        for user_id in [u for u, (at, _) in self._since.items() if at <= horizon]:
            del self._since[user_id]
