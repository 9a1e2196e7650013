"""How an event reaches the workers that hold its receivers.

The hub hands every delivery to a :class:`Broker`; the broker brings it to the hub of each
worker that holds one of the receivers (``deliver``). :class:`LocalBroker` serves a single worker
in process: publishing is delivering.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

__all__ = ["Broker", "Deliver", "LocalBroker"]

Deliver = Callable[[Collection[int], str, bytes, "int | None", bool], None]
"""``deliver(user_ids, event, payload, exclude_user, droppable)`` on one worker's hub."""


class Broker(Protocol):
    """Carries encoded events between the hubs of a deployment."""

    def attach(self, deliver: Deliver) -> None:
        """Register the local hub's delivery function."""

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        """Bring ``payload`` (one encoded event) to every connection of ``user_ids``, except
        those of ``exclude_user``, on every worker. Never waits."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalBroker:
    """The broker of a single worker: delivery happens in the publishing call."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self.published = 0

    def attach(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, user_ids: Collection[int], event: str, payload: bytes,
                exclude_user: int | None, droppable: bool) -> None:
        if self._deliver is None:
            raise RuntimeError("no hub attached to the broker")
        self.published += 1
        self._deliver(user_ids, event, payload, exclude_user, droppable)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
