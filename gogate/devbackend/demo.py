"""The demo data a fresh development backend starts with.

Four users and three chats, so two browser tabs can talk at once and a third can see that a
non-member gets nothing:

    user 1 John Doe     chats 1 "General", 2 "John & Jane"
    user 2 Jane Smith   chats 1 "General", 2 "John & Jane"
    user 3 Carol White  chats 1 "General", 3 "Carol & Dave"
    user 4 Dave Black   chat 3 "Carol & Dave" (deliberately not in "General")
"""

from __future__ import annotations

from .store import Store

__all__ = ["DEMO_CHATS", "DEMO_USERS", "seed"]

# (id, first name, last name, email, phone)
DEMO_USERS: tuple[tuple[int, str, str, str, str], ...] = (
    (1, "John", "Doe", "john@example.com", "+79991234567"),
    (2, "Jane", "Smith", "jane@example.com", "+79991234568"),
    (3, "Carol", "White", "carol@example.com", "+79991234569"),
    (4, "Dave", "Black", "dave@example.com", "+79991234570"),
)

# (id, name, member ids)
DEMO_CHATS: tuple[tuple[int, str, tuple[int, ...]], ...] = (
    (1, "General", (1, 2, 3)),
    (2, "John & Jane", (1, 2)),
    (3, "Carol & Dave", (3, 4)),
)

# (owner id, file name, size in bytes)
DEMO_ATTACHMENTS: tuple[tuple[int, str, int], ...] = (
    (1, "report.pdf", 48213),
    (2, "photo.jpg", 183502),
)


def seed(store: Store) -> bool:
    """Fill an empty store with the demo data; return whether it did.

    A store that already holds any user or chat is left as it is, so restarting on the
    same database file keeps its data (and the demo ids stay the ones above).
    """
    if not store.is_empty():
        return False
    for user_id, first_name, last_name, email, phone in DEMO_USERS:
        user = store.create_user(first_name, last_name, email=email, phone=phone)
        assert user.id == user_id, "demo users need an empty database"
    for chat_id, name, member_ids in DEMO_CHATS:
        created = store.create_chat(name, member_ids)
        assert created == chat_id, "demo chats need an empty database"
    for owner_id, file_name, size in DEMO_ATTACHMENTS:
        store.create_attachment(owner_id, file_name, size)
    return True
