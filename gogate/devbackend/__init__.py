"""The development backend: a small, honest BuzzChat backend kept in SQLite.

It speaks the backend API gogate calls with the real backend's answers and RS256 tokens, plus
``/api/dev/`` helpers to create users, chats and tokens, to fetch the tokens' public key and to
inject faults; ``legacy_shapes`` makes it answer the original Go gateway instead.
``python -m gogate --dev`` embeds it; ``python -m gogate.devbackend`` runs it alone.
For development and tests only: anyone who can reach it can mint tokens.
The gateway itself never imports this package.
"""

from .app import DevBackend, create_app
from .store import Store

__all__ = ["DevBackend", "Store", "create_app"]
