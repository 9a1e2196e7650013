"""The gateway's view of backend records: who a user is, and a message the backend accepted."""

from __future__ import annotations

import msgspec

__all__ = ["SentMessage", "User"]


class User(msgspec.Struct, frozen=True):
    id: int
    name: str
    phone: str | None


class SentMessage(msgspec.Struct, frozen=True):
    """A message the backend accepted: its ids and its JSON exactly as the backend sent it."""

    id: int
    chat_id: int
    raw: bytes
