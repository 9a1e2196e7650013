"""The demo page of ``python -m gogate --dev``: a small chat in the browser, over the gateway's
own ``/ws``, with the demo users of the development backend.

The gateway serves it on its public port in development mode only (the command line hands a
:class:`DemoPages` to the gateway as its ``pages``), under ``/demo``::

    GET /demo, /demo/                                 the page
    GET /demo/<file>                                  its script and style sheet
    GET /demo/api/users                               the demo users: [{id, name}]
    GET /demo/api/users/{id}/token                    a fresh token of the user: {token, ttl}
    GET /demo/api/users/{id}/chats                    the user's chats: [{id, name, members}]
    GET /demo/api/users/{id}/chats/{chat}/messages    the chat's latest messages, oldest first,
                                                      with their reactions and readers

Everything the page needs comes from the page's own origin. Anyone who can open it gets a token
of every demo user: like the rest of the development backend, it is for one's own machine.

The gateway's router answers at once, on the event loop, so every answer here is synchronous:
the files are read once, when the pages are made, and looked up by exact name (a path that is
not one of them, ``..`` or an encoded slash included, is 404); the data comes from a read-only
connection to the development backend's SQLite database, a few indexed queries on a local file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from .demo import DEMO_USERS
from .store import Store
from .tokens import TokenSigner

__all__ = ["DEMO_PREFIX", "MESSAGES_SHOWN", "DemoPages", "Page"]

#: Status, body and headers of an answer.
Page = tuple[int, bytes, Sequence[tuple[str, str]]]

DEMO_PREFIX: Final = b"/demo"
MESSAGES_SHOWN: Final = 50  # the latest messages of a chat the page shows when opened

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_FILE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")
_COMMON: Final = (("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"))
# The page loads only its own files and talks only to its own origin (/demo/api and /ws).
_PAGE_POLICY: Final = ("Content-Security-Policy",
                       "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_JSON: Final = (("Content-Type", "application/json"), *_COMMON)
_API: Final = re.compile(rb"/demo/api/users(?:/(\d{1,9})(?:/(token|chats)"
                         rb"(?:/(\d{1,9})/(messages))?)?)?")
_NAME: Final = "u.first_name || ' ' || u.last_name"
# What the page lists under each message: its key, the table, the columns beside the user's id
# and name, and the order within the list.
_UNDER_MESSAGES: Final = (("reactions", "reactions", ", r.emoji", "r.rowid"),
                          ("read_by", "message_reads", "", "r.read_at"))


def _json(status: int, body: object) -> Page:
    return status, json.dumps(body, ensure_ascii=False).encode(), _JSON


def _not_found(what: str) -> Page:
    return _json(404, {"error": what})


def _static_files() -> dict[bytes, Page]:
    """The page's files by URL path, read once; only plain files with a known type."""
    files: dict[bytes, Page] = {}
    folder = resources.files(__name__.rpartition(".")[0]).joinpath("static")
    for entry in folder.iterdir():
        suffix = Path(entry.name).suffix
        if not entry.is_file() or suffix not in _TYPES or not _FILE_NAME.fullmatch(entry.name):
            continue
        headers: tuple[tuple[str, str], ...] = (("Content-Type", _TYPES[suffix]), *_COMMON)
        if suffix == ".html":
            headers += (_PAGE_POLICY,)
        files[DEMO_PREFIX + b"/" + entry.name.encode()] = (200, entry.read_bytes(), headers)
    index = files.get(DEMO_PREFIX + b"/index.html")
    if index is None:
        raise FileNotFoundError("the demo page (static/index.html) is missing from the package")
    files[DEMO_PREFIX] = files[DEMO_PREFIX + b"/"] = index
    return files


class DemoPages:
    """The demo page and its data, over the development backend's ``store``.

    Called with a path of the public port; answers the paths under ``/demo`` and returns None
    for every other path. Tokens are signed with the backend's own key and live ``token_ttl``
    seconds (the page asks for a fresh one when the gateway says its token expired).
    """

    def __init__(self, store: Store, token_ttl: float = 3600.0) -> None:
        self._store = store
        self._signer = TokenSigner.for_store(store)
        self._token_ttl = token_ttl
        self._files = _static_files()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(Path(store.path).resolve().as_uri() + "?mode=ro", uri=True,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __call__(self, path: bytes) -> Page | None:
        if path != DEMO_PREFIX and not path.startswith(DEMO_PREFIX + b"/"):
            return None
        page = self._files.get(path)
        if page is not None:
            return page
        route = _API.fullmatch(path)
        if route is None:
            return 404, b"404 Not Found\n", (("Content-Type", "text/plain"), *_COMMON)
        user_id, what, chat_id, _ = route.groups()
        if user_id is None:
            return _json(200, self.users())
        user = int(user_id)
        if user not in self._demo_user_ids():
            return _not_found("no such demo user")
        if what == b"token":
            return _json(200, {"token": self.token(user), "ttl": self._token_ttl})
        if what == b"chats" and chat_id is None:
            return _json(200, self.chats(user))
        if what == b"chats" and chat_id is not None:
            chat = int(chat_id)
            if not self._store.is_member(chat, user):
                return _json(403, {"error": "not a member of this chat"})
            return _json(200, self.messages(chat))
        return _not_found("no such demo resource")

    # --- the data ---------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _demo_user_ids(self) -> set[int]:
        return {row["id"] for row in self.users()}

    def users(self) -> list[dict[str, Any]]:
        """The demo users present in the database, by id."""
        ids = json.dumps([user_id for user_id, *_ in DEMO_USERS])
        rows = self._rows(f"SELECT u.id, {_NAME} AS name FROM users u WHERE u.is_active"
                          " AND u.id IN (SELECT value FROM json_each(?)) ORDER BY u.id", (ids,))
        return [{"id": row["id"], "name": row["name"]} for row in rows]

    def token(self, user_id: int) -> str:
        return self._signer.issue(user_id, self._token_ttl, user=self._store.get_user(user_id))

    def chats(self, user_id: int) -> list[dict[str, Any]]:
        """The user's chats by id, each with its members."""
        rows = self._rows(
            f"SELECT c.id, c.name, u.id AS member, {_NAME} AS member_name"
            " FROM chat_members mine JOIN chats c ON c.id = mine.chat_id"
            " JOIN chat_members m ON m.chat_id = c.id JOIN users u ON u.id = m.user_id"
            " WHERE mine.user_id = ? ORDER BY c.id, u.id", (user_id,))
        chats: dict[int, dict[str, Any]] = {}
        for row in rows:
            chat = chats.setdefault(row["id"], {"id": row["id"], "name": row["name"],
                                                "members": []})
            chat["members"].append({"id": row["member"], "name": row["member_name"]})
        return list(chats.values())

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The chat's latest messages, oldest first, shaped like ``new_message`` (the sender
        as ``user``), with ``reactions`` and ``read_by`` as the page shows them."""
        rows = self._rows(
            f"SELECT m.id, m.user_id, m.text, m.created_at, {_NAME} AS name FROM messages m"
            " JOIN users u ON u.id = m.user_id WHERE m.chat_id = ? ORDER BY m.id DESC LIMIT ?",
            (chat_id, MESSAGES_SHOWN))
        messages = {row["id"]: {"id": row["id"], "chat_id": chat_id,
                                "user": {"id": row["user_id"], "full_name": row["name"]},
                                "text": row["text"], "created_at": row["created_at"],
                                "reactions": [], "read_by": []}
                    for row in reversed(rows)}
        ids = json.dumps(list(messages))
        for key, table, columns, order in _UNDER_MESSAGES:
            for row in self._rows(
                    f"SELECT r.message_id, r.user_id, {_NAME} AS name{columns} FROM {table} r"
                    " JOIN users u ON u.id = r.user_id"
                    f" WHERE r.message_id IN (SELECT value FROM json_each(?)) ORDER BY {order}",
                    (ids,)):
                entry = dict(row)
                messages[entry.pop("message_id")][key].append(entry)
        return list(messages.values())
