"""The development backend: a small, honest BuzzChat backend kept in SQLite.

It speaks the backend API gogate calls with the real backend's
answers, plus ``/api/dev/`` helpers to create users, chats and tokens and to inject faults.
``python -m gogate --dev`` embeds it; ``python -m gogate.devbackend`` runs it alone.
For development and tests only: anyone who can reach it can mint tokens.
The gateway itself never imports this package.
"""

from .app import DevBackend, create_app
from .store import Store

__all__ = ["DevBackend", "Store", "create_app"]
