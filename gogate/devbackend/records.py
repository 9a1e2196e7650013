"""The development backend's records, as the store hands them out, and its lookup errors.

Records are frozen msgspec Structs: plain values a handler can turn into JSON without touching
the database again.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import msgspec

__all__ = ["DEFAULT_ROLES", "Attachment", "Message", "Reaction", "UnknownChat", "UnknownUser",
           "User", "now_iso", "user_from_row"]

DEFAULT_ROLES = ("ROLE_USER",)


class UnknownUser(LookupError):
    """A user id that is not in the store."""


class UnknownChat(LookupError):
    """A chat id that is not in the store."""


class User(msgspec.Struct, frozen=True):
    id: int
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    roles: tuple[str, ...]
    is_active: bool

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Attachment(msgspec.Struct, frozen=True):
    id: int
    owner_id: int
    file_name: str
    size: int

    @property
    def url(self) -> str:
        return f"/files/{self.id}"


class Message(msgspec.Struct, frozen=True):
    id: int
    chat_id: int
    user_id: int
    text: str | None
    reply_to_id: int | None
    created_at: str
    edited_at: str | None
    attachment_ids: tuple[int, ...] = ()


class Reaction(msgspec.Struct, frozen=True):
    message_id: int
    user_id: int
    emoji: str
    created_at: str


def now_iso() -> str:
    """The current UTC time as the backend writes it: ``2025-10-25T12:34:56+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def user_from_row(row: sqlite3.Row) -> User:
    return User(id=row["id"], email=row["email"], phone=row["phone"],
                first_name=row["first_name"], last_name=row["last_name"],
                roles=tuple(json.loads(row["roles"])), is_active=bool(row["is_active"]))
