"""The stream authority of a host without Redis: the supervisor's
:class:`~gogate.streams.StreamStore`, which numbers every stream event of the host's workers
and answers where a user's stream stands.

Only the supervisor sees every event routed between its workers, so it alone can give each
receiver the next offset of its stream: two devices of one user on two workers then see the
same offsets. What it answers a worker (a grant, a catch-up) is computed in the same step as
the change it reflects, and the bus to each worker is ordered, so a worker never receives an
event numbered before a position it was given after it.
"""

from __future__ import annotations

import asyncio
from typing import Final

from gogate.cluster import bus
from gogate.streams import StreamStore

__all__ = ["close_all", "grant", "number", "prune"]

_PRUNE_EVERY: Final = 1.0  # seconds between two expiries of the kept events and streams


def grant(store: StreamStore | None, message: bus.Acquire, ok: bool) -> bus.Granted:
    """The answer to an acquire: the slot, and the user's stream opened for the connection
    (``store`` None: recovery is off)."""
    since = message.since
    if not ok or store is None:
        return bus.Granted(message.request, ok, None, 0,
                           None if since is None or not ok else False)
    epoch, offset = store.open(message.user_id)
    if since is None:
        return bus.Granted(message.request, True, epoch, offset)
    events = store.since(message.user_id, *since)
    return bus.Granted(message.request, True, epoch, offset, events is not None, events or [])


def number(store: StreamStore, message: bus.Publish) -> None:
    """Keep a stream event in the stream of each receiver that has one, and give the event
    their offsets (0: none)."""
    excluded = message.exclude_user
    receivers = message.user_ids if excluded is None else [
        user_id for user_id in message.user_ids if user_id != excluded]
    offsets = store.append(receivers, message.event, message.payload)
    message.offsets = [offsets.get(user_id, 0) for user_id in message.user_ids]


def close_all(store: StreamStore, held: dict[int, int]) -> None:
    """Connections gone at once (a dead worker's): user id → how many."""
    for user_id, count in held.items():
        for _ in range(count):
            store.close(user_id)


async def prune(store: StreamStore) -> None:
    """Expire kept events and streams, once a second, until cancelled."""
    while True:
        await asyncio.sleep(_PRUNE_EVERY)
        store.prune()
