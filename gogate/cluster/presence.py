"""Who holds whom on this host: for each user, the workers holding a connection of theirs and
how many.

The supervisor keeps this one table. It decides where an event goes (only to the workers
holding one of its receivers), enforces the per-user connection limit across workers, answers
``online``, and is the authority the Redis relay copies for the other hosts.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Presence"]


class Presence:
    """User id → {worker index: connections}; a user holding nothing has no entry."""

    def __init__(self) -> None:
        self._users: dict[int, dict[int, int]] = {}

    def __contains__(self, user_id: int) -> bool:
        return user_id in self._users

    def acquire(self, worker: int, user_id: int, limit: int) -> bool:
        """Count one more connection of the user on ``worker`` unless the user holds ``limit``
        (0 = no limit) on this host already."""
        holders = self._users.get(user_id)
        if holders is None:
            self._users[user_id] = {worker: 1}
            return True
        if limit and sum(holders.values()) >= limit:
            return False
        holders[worker] = holders.get(worker, 0) + 1
        return True

    def release(self, worker: int, user_id: int) -> None:
        """Count one connection of the user on ``worker`` less."""
        holders = self._users.get(user_id)
        if holders is None or worker not in holders:
            return
        if holders[worker] > 1:
            holders[worker] -= 1
        elif len(holders) > 1:
            del holders[worker]
        else:
            del self._users[user_id]

    def count(self, user_id: int) -> int:
        """The user's connections on this host."""
        holders = self._users.get(user_id)
        return 0 if holders is None else sum(holders.values())

    def forget(self, worker: int) -> dict[int, int]:
        """Drop every connection of a worker that is gone; returns what it held (user id →
        connections). Rare enough to walk the whole table."""
        gone: dict[int, int] = {}
        for user_id, holders in list(self._users.items()):
            count = holders.pop(worker, 0)
            if count:
                gone[user_id] = count
                if not holders:
                    del self._users[user_id]
        return gone

    def holders(self, user_ids: Iterable[int]) -> set[int]:
        """The workers holding at least one of ``user_ids``."""
        found: set[int] = set()
        users = self._users
        for user_id in user_ids:
            holders = users.get(user_id)
            if holders:
                found.update(holders)
        return found

    def totals(self) -> dict[int, int]:
        """User id → connections on this host, for every user it holds."""
        return {user_id: sum(holders.values()) for user_id, holders in self._users.items()}
