"""What every handler of the development backend shares: the store, the token signer, the
internal API key, the answer shapes, the injected fault and the call counts; and the checks of
who is calling.
"""

from __future__ import annotations

import asyncio
import hmac
import time

import msgspec
from aiohttp import web

from .records import User
from .replies import Fail
from .store import Store
from .tokens import TokenError, TokenExpired, TokenSigner

__all__ = ["CALL_NAMES", "STATE", "Fault", "State"]

#: The backend calls gogate makes, as counted by ``GET /api/dev/stats``.
CALL_NAMES = ("validate", "members", "send_message", "add_reaction", "mark_read")

_BATCH = 500  # tokens signed per thread task


class Fault(msgspec.Struct):
    """An injected failure: requests under ``match`` wait ``delay`` seconds, then get
    ``status`` (or their real answer when it is None), for ``remaining`` requests or forever."""

    delay: float
    status: int | None
    match: str
    remaining: int | None


class State:
    """The development backend's shared state; one per application."""

    def __init__(self, store: Store, signer: TokenSigner, internal_api_key: str,
                 token_ttl: float, legacy_shapes: bool) -> None:
        self.store = store
        self.signer = signer
        self.key = internal_api_key.encode()
        self.token_ttl = token_ttl
        self.legacy_shapes = legacy_shapes
        self.fault: Fault | None = None
        self.calls = dict.fromkeys(CALL_NAMES, 0)

    def issue(self, user_id: int, ttl: float | None = None) -> str:
        """A token for ``user_id`` living ``ttl`` seconds (the backend's default when None),
        with the user's claims when the user exists."""
        return self.signer.issue(user_id, self.token_ttl if ttl is None else ttl,
                                 user=self.store.get_user(user_id))

    async def issue_many(self, user_ids: list[int], ttl: float | None = None) -> dict[int, str]:
        """Tokens for many users, all issued at the same second. An RSA signature costs about
        0.4 ms of CPU, so batches are signed in threads (the signing releases the GIL) and the
        backend keeps answering meanwhile."""
        users = self.store.users(user_ids)
        lifetime = self.token_ttl if ttl is None else ttl
        now = time.time()

        def sign(batch: list[int]) -> list[str]:
            return [self.signer.issue(i, lifetime, user=users.get(i), now=now) for i in batch]

        batches = [user_ids[i:i + _BATCH] for i in range(0, len(user_ids), _BATCH)]
        signed = await asyncio.gather(*(asyncio.to_thread(sign, b) for b in batches))
        return dict(zip(user_ids, (t for batch in signed for t in batch), strict=True))

    def identify(self, token: str) -> int:
        """The user id a token of this backend names; raises :class:`TokenError`."""
        return self.signer.verify(token)

    def check_key(self, request: web.Request) -> None:
        """Refuse (403) an internal call without the right ``X-Internal-API-Key``."""
        given = request.headers.get("X-Internal-API-Key")
        try:
            ok = given is not None and hmac.compare_digest(given.encode(), self.key)
        except UnicodeEncodeError:
            ok = False
        if not ok:
            raise Fail(403, {"error": "Invalid API key"})

    def caller(self, request: web.Request) -> User:
        """The active user whose bearer token authorises this user API call, or a 401."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Fail(401, {"message": "Unauthorized"})
        try:
            user_id = self.identify(token)
        except TokenExpired:
            raise Fail(401, {"message": "Unauthorized", "details": {"token": "expired"}}) from None
        except TokenError:
            raise Fail(401, {"message": "Unauthorized", "details": {"token": "invalid"}}) from None
        user = self.store.get_user(user_id)
        if user is None or not user.is_active:
            raise Fail(401, {"message": "Unauthorized", "details": {"token": "unknown user"}})
        return user

    def require_member(self, chat_id: int, user_id: int) -> None:
        if not self.store.is_member(chat_id, user_id):
            raise Fail(403, {"message": "Access denied to this chat"})


STATE = web.AppKey("state", State)
