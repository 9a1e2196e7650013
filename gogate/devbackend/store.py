"""The development backend's data: users, chats, members, attachments, messages, reactions
and read receipts, kept in one SQLite database.

Every method is a plain synchronous call of a few statements on one connection: SQLite on a
local disk answers in microseconds, so the web handlers call it directly. A lock keeps the
connection to one caller at a time should the store be shared with another thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from .records import (
    DEFAULT_ROLES,
    Attachment,
    Message,
    Reaction,
    UnknownChat,
    UnknownUser,
    User,
    now_iso,
    user_from_row,
)
from .schema import STATEMENTS

__all__ = ["Store"]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class Store:
    """The development backend's database at ``path`` (a file, or ``":memory:"``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys = ON")
        if path not in (":memory:", "") and not path.startswith("file::memory:"):
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        with self._tx() as cur:
            for statement in STATEMENTS:
                cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, committed on success and rolled back on any error."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def is_empty(self) -> bool:
        """Whether the store holds no user and no chat."""
        row = self._one(
            "SELECT NOT EXISTS (SELECT 1 FROM users) AND NOT EXISTS (SELECT 1 FROM chats)")
        return row is not None and bool(row[0])

    def setting(self, key: str) -> str | None:
        """A value the backend keeps for itself (such as its token key), or None."""
        row = self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    def keep_setting(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless one is there already; return the kept one."""
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", (key, value))
            row = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row["value"])

    # --- users ---------------------------------------------------------------------------

    def create_user(self, first_name: str, last_name: str, *, email: str | None = None,
                    phone: str | None = None, roles: Sequence[str] = DEFAULT_ROLES,
                    is_active: bool = True) -> User:
        with self._tx() as cur:
            cur.execute("INSERT INTO users (email, phone, first_name, last_name, roles, is_active)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (email, phone, first_name, last_name, json.dumps(list(roles)),
                         int(is_active)))
            user_id = cur.lastrowid
        assert user_id is not None
        return User(user_id, email, phone, first_name, last_name, tuple(roles), is_active)

    def create_users(self, n: int, prefix: str = "load") -> list[int]:
        """Create ``n`` active users named ``<prefix><id> User`` in one transaction."""
        with self._tx() as cur:
            first = cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM users").fetchone()[0]
            ids = list(range(first, first + n))
            cur.executemany(
                "INSERT INTO users (id, email, first_name, last_name) VALUES (?, ?, ?, 'User')",
                ((i, f"{prefix}{i}@example.com", f"{prefix}{i}") for i in ids))
        return ids

    def get_user(self, user_id: int) -> User | None:
        row = self._one("SELECT * FROM users WHERE id = ?", (user_id,))
        return None if row is None else user_from_row(row)

    def users(self, user_ids: Sequence[int]) -> dict[int, User]:
        """The users among these ids that exist, by id (one query however many)."""
        rows = self._all("SELECT * FROM users WHERE id IN (SELECT value FROM json_each(?))",
                         (json.dumps(list(user_ids)),))
        return {row["id"]: user_from_row(row) for row in rows}

    # --- chats and members ---------------------------------------------------------------

    def create_chat(self, name: str, member_ids: Iterable[int]) -> int:
        """Create a chat with these members; raise :class:`UnknownUser` if one is missing."""
        with self._tx() as cur:
            cur.execute("INSERT INTO chats (name) VALUES (?)", (name,))
            chat_id = cur.lastrowid
            assert chat_id is not None
            try:
                cur.executemany(
                    "INSERT OR IGNORE INTO chat_members (chat_id, user_id) VALUES (?, ?)",
                    ((chat_id, user_id) for user_id in member_ids))
            except sqlite3.IntegrityError as exc:
                raise UnknownUser("a member is not a known user") from exc
        return chat_id

    def chat_exists(self, chat_id: int) -> bool:
        return self._one("SELECT 1 FROM chats WHERE id = ?", (chat_id,)) is not None

    def add_member(self, chat_id: int, user_id: int) -> None:
        """Add a member (no-op if already one); raise UnknownChat / UnknownUser."""
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM chats WHERE id = ?", (chat_id,)).fetchone() is None:
                raise UnknownChat(chat_id)
            try:
                cur.execute("INSERT OR IGNORE INTO chat_members (chat_id, user_id) VALUES (?, ?)",
                            (chat_id, user_id))
            except sqlite3.IntegrityError as exc:
                raise UnknownUser(user_id) from exc

    def remove_member(self, chat_id: int, user_id: int) -> bool:
        """Remove a member; return whether they were one."""
        with self._tx() as cur:
            cur.execute("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?",
                        (chat_id, user_id))
            return cur.rowcount > 0

    def members(self, chat_id: int) -> list[User] | None:
        """The chat's members ordered by id, or ``None`` if the chat does not exist."""
        with self._lock:
            exists = self._conn.execute("SELECT 1 FROM chats WHERE id = ?", (chat_id,))
            if exists.fetchone() is None:
                return None
            rows = self._conn.execute(
                "SELECT u.* FROM chat_members m JOIN users u ON u.id = m.user_id"
                " WHERE m.chat_id = ? ORDER BY u.id", (chat_id,)).fetchall()
        return [user_from_row(row) for row in rows]

    def member_ids(self, chat_id: int) -> list[int]:
        rows = self._all("SELECT user_id FROM chat_members WHERE chat_id = ? ORDER BY user_id",
                         (chat_id,))
        return [row["user_id"] for row in rows]

    def is_member(self, chat_id: int, user_id: int) -> bool:
        row = self._one("SELECT 1 FROM chat_members WHERE chat_id = ? AND user_id = ?",
                        (chat_id, user_id))
        return row is not None

    # --- attachments ---------------------------------------------------------------------

    def create_attachment(self, owner_id: int, file_name: str, size: int = 0) -> Attachment:
        with self._tx() as cur:
            try:
                cur.execute("INSERT INTO attachments (owner_id, file_name, size) VALUES (?, ?, ?)",
                            (owner_id, file_name, size))
            except sqlite3.IntegrityError as exc:
                raise UnknownUser(owner_id) from exc
            attachment_id = cur.lastrowid
        assert attachment_id is not None
        return Attachment(attachment_id, owner_id, file_name, size)

    def attachments(self, attachment_ids: Sequence[int]) -> list[Attachment]:
        """The attachments with these ids that exist, in the order asked."""
        if not attachment_ids:
            return []
        rows = self._all(
            f"SELECT * FROM attachments WHERE id IN ({_placeholders(len(attachment_ids))})",
            attachment_ids)
        found = {row["id"]: Attachment(row["id"], row["owner_id"], row["file_name"], row["size"])
                 for row in rows}
        return [found[i] for i in dict.fromkeys(attachment_ids) if i in found]

    # --- messages ------------------------------------------------------------------------

    def create_message(self, chat_id: int, user_id: int, text: str | None,
                       reply_to_id: int | None = None,
                       attachment_ids: Sequence[int] = ()) -> Message:
        created_at = now_iso()
        attachment_ids = tuple(dict.fromkeys(attachment_ids))
        with self._tx() as cur:
            cur.execute("INSERT INTO messages (chat_id, user_id, text, reply_to_id, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (chat_id, user_id, text, reply_to_id, created_at))
            message_id = cur.lastrowid
            assert message_id is not None
            cur.executemany(
                "INSERT INTO message_attachments (message_id, attachment_id) VALUES (?, ?)",
                ((message_id, a) for a in attachment_ids))
        return Message(message_id, chat_id, user_id, text, reply_to_id, created_at, None,
                       attachment_ids)

    def get_message(self, message_id: int) -> Message | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM messages WHERE id = ?",
                                     (message_id,)).fetchone()
            if row is None:
                return None
            attached = self._conn.execute(
                "SELECT attachment_id FROM message_attachments WHERE message_id = ?"
                " ORDER BY attachment_id", (message_id,)).fetchall()
        return Message(row["id"], row["chat_id"], row["user_id"], row["text"],
                       row["reply_to_id"], row["created_at"], row["edited_at"],
                       tuple(a[0] for a in attached))

    def message_chats(self, message_ids: Sequence[int]) -> dict[int, int]:
        """Map each existing message id among these to its chat id."""
        if not message_ids:
            return {}
        rows = self._all(
            f"SELECT id, chat_id FROM messages WHERE id IN ({_placeholders(len(message_ids))})",
            message_ids)
        return {row["id"]: row["chat_id"] for row in rows}

    # --- reactions and reads -------------------------------------------------------------

    def add_reaction(self, message_id: int, user_id: int, emoji: str) -> tuple[Reaction, bool]:
        """Add a reaction; return it and whether it is new (the same triple is kept once)."""
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO reactions (message_id, user_id, emoji, created_at)"
                        " VALUES (?, ?, ?, ?)", (message_id, user_id, emoji, now_iso()))
            created = cur.rowcount > 0
            row = cur.execute("SELECT created_at FROM reactions"
                              " WHERE message_id = ? AND user_id = ? AND emoji = ?",
                              (message_id, user_id, emoji)).fetchone()
        return Reaction(message_id, user_id, emoji, row["created_at"]), created

    def mark_read(self, message_ids: Iterable[int], user_id: int) -> None:
        """Record that the user read these messages (reading twice keeps the first time)."""
        read_at = now_iso()
        with self._tx() as cur:
            cur.executemany("INSERT OR IGNORE INTO message_reads (message_id, user_id, read_at)"
                            " VALUES (?, ?, ?)",
                            ((message_id, user_id, read_at) for message_id in message_ids))

    def read_count(self, message_id: int) -> int:
        row = self._one("SELECT COUNT(*) FROM message_reads WHERE message_id = ?", (message_id,))
        return 0 if row is None else int(row[0])

    def reactions(self, message_id: int) -> list[Reaction]:
        rows = self._all("SELECT * FROM reactions WHERE message_id = ? ORDER BY rowid",
                         (message_id,))
        return [Reaction(row["message_id"], row["user_id"], row["emoji"], row["created_at"])
                for row in rows]
