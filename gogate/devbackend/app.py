"""The development backend: the BuzzChat backend API that gogate calls, kept in SQLite.

For development and tests only. It has no real login (tokens are minted by ``/api/dev/``
endpoints that anyone can call) and must never face a network other than your own machine.

Routes::

    internal (X-Internal-API-Key)       POST /api/internal/v1/auth/validate
                                        GET  /api/internal/v1/chats/{id}/members
    user API (Authorization: Bearer)    POST /api/v1/messages
                                        POST /api/v1/messages/{id}/reactions
                                        POST /api/v1/messages/read
    development helpers (no auth)       POST /api/dev/users, /api/dev/users/bulk
                                        POST /api/dev/tokens, /api/dev/tokens/bulk
                                        POST /api/dev/chats, /api/dev/chats/{id}/members
                                        DELETE /api/dev/chats/{id}/members/{user_id}
                                        POST /api/dev/attachments
                                        PUT|DELETE /api/dev/faults
                                        GET|DELETE /api/dev/stats
                                        GET  /api/dev/public-key

Tokens are RS256 JWTs shaped like the real backend's (see ``tokens``); the public key that
verifies them is served at ``/api/dev/public-key`` and written to ``DevBackend.public_key_path``.
With ``legacy_shapes`` the backend speaks the shapes the original Go gateway reads and sends
(users and members with ``user_id`` and ``name``, camelCase message bodies, ``error`` in every
refusal), so that gateway can run against it.

Modules: ``bodies`` (what requests carry), ``replies`` (what it answers), ``state`` (what the
handlers share), ``middleware``, ``api`` (the calls gogate makes), ``devapi`` (the helpers),
``store`` / ``records`` / ``schema`` (the data) and ``tokens`` (signing and verifying).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from aiohttp import web

from . import api, devapi
from .demo import DEMO_USERS, seed
from .middleware import count_calls, errors_as_json, inject_faults
from .state import CALL_NAMES, STATE, State
from .store import Store
from .tokens import TokenSigner

__all__ = ["CALL_NAMES", "DevBackend", "create_app"]

log = logging.getLogger("gogate.devbackend")


def create_app(store: Store, internal_api_key: str, *, token_ttl: float = 86400.0,
               signer: TokenSigner | None = None,
               legacy_shapes: bool = False) -> web.Application:
    """The development backend's application over ``store``.

    ``internal_api_key`` guards the internal API; ``token_ttl`` is the lifetime in seconds of
    tokens minted by ``/api/dev/`` when the request names none; ``signer`` signs the tokens
    (by default with the key kept in ``store``); ``legacy_shapes`` answers in the original
    Go gateway's shapes.
    """
    app = web.Application(middlewares=[errors_as_json, count_calls, inject_faults])
    if signer is None:
        signer = TokenSigner.for_store(store)
    app[STATE] = State(store, signer, internal_api_key, token_ttl, legacy_shapes)
    r = app.router
    r.add_post("/api/internal/v1/auth/validate", api.validate, name="validate")
    r.add_get(r"/api/internal/v1/chats/{chat_id:\d+}/members", api.members, name="members")
    r.add_post("/api/v1/messages", api.send_message, name="send_message")
    r.add_post("/api/v1/messages/read", api.mark_read, name="mark_read")
    r.add_post(r"/api/v1/messages/{message_id:\d+}/reactions", api.add_reaction,
               name="add_reaction")
    r.add_post("/api/dev/users", devapi.create_user)
    r.add_post("/api/dev/users/bulk", devapi.create_users)
    r.add_post("/api/dev/tokens", devapi.mint_token)
    r.add_post("/api/dev/tokens/bulk", devapi.mint_tokens)
    r.add_post("/api/dev/chats", devapi.create_chat)
    r.add_post(r"/api/dev/chats/{chat_id:\d+}/members", devapi.add_member)
    r.add_delete(r"/api/dev/chats/{chat_id:\d+}/members/{user_id:\d+}", devapi.remove_member)
    r.add_post("/api/dev/attachments", devapi.create_attachment)
    r.add_put("/api/dev/faults", devapi.set_faults)
    r.add_delete("/api/dev/faults", devapi.clear_faults)
    r.add_get("/api/dev/stats", devapi.stats)
    r.add_delete("/api/dev/stats", devapi.reset_stats)
    r.add_get("/api/dev/public-key", devapi.public_key)
    return app


class DevBackend:
    """The development backend served on ``host:port`` inside the running event loop.

    ``port=0`` picks a free port; :meth:`start` returns the base URL with the real one.
    It keeps a temporary directory, removed by :meth:`stop`, that holds ``public_key_path``
    (the PEM of the key that verifies its tokens, for ``JWT_PUBLIC_KEY``) and, without
    ``db_path``, the database. A store that is empty gets the demo users and chats of
    :mod:`gogate.devbackend.demo`. ``legacy_shapes`` answers in the original Go gateway's
    shapes.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, db_path: str | None = None,
                 internal_api_key: str = "dev-internal-key", token_ttl: float = 86400.0, *,
                 access_log: bool = False, legacy_shapes: bool = False) -> None:
        self.host = host
        self.port = port
        self._temp_dir: str | None = tempfile.mkdtemp(prefix="gogate-dev-")
        self.db_path = db_path or os.path.join(self._temp_dir, "dev.sqlite3")
        self.internal_api_key = internal_api_key
        self.token_ttl = token_ttl
        self.legacy_shapes = legacy_shapes
        self._access_log = access_log
        self.store = Store(self.db_path)
        seed(self.store)
        signer = TokenSigner.for_store(self.store)
        #: The PEM text of the public key that verifies this backend's tokens.
        self.public_key: str = signer.public_pem.decode("ascii")
        #: A file holding :attr:`public_key`, removed by :meth:`stop`.
        self.public_key_path = os.path.join(self._temp_dir, "jwt-public-key.pem")
        with open(self.public_key_path, "w", encoding="ascii") as file:
            file.write(self.public_key)
        self._app = create_app(self.store, internal_api_key, token_ttl=token_ttl, signer=signer,
                               legacy_shapes=legacy_shapes)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._tokens: dict[int, str] | None = None

    def tokens(self) -> dict[int, str]:
        """A token per demo user present in the store, living ``token_ttl`` seconds."""
        if self._tokens is None:
            state = self._app[STATE]
            self._tokens = {user_id: state.issue(user_id) for user_id, *_ in DEMO_USERS
                            if self.store.get_user(user_id) is not None}
        return dict(self._tokens)

    async def start(self) -> str:
        """Listen and return the base URL, e.g. ``http://127.0.0.1:8000``."""
        runner = web.AppRunner(self._app, access_log=log if self._access_log else None,
                               handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        log.info("development backend on %s, database %s", self.url, self.db_path)
        return self.url

    async def stop(self) -> None:
        """Stop serving, close the database and remove the temporary directory (with the
        public key file, and the database when it was temporary)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    async def __aenter__(self) -> DevBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
