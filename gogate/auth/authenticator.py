"""The one entry point of authentication: who holds a token, and until when.

With a verifier (``JWT_PUBLIC_KEY`` or ``JWT_SECRET``) a token is checked locally and the
backend is not asked. Without one, the backend validates. Either way an accepted token is kept
in the :class:`~gogate.auth.cache.ValidationCache` (``AUTH_CACHE_TTL``, never past its ``exp``),
so that a client reconnecting with the same token costs neither a backend call nor a second
signature check.

Revocations apply to both ways: a token of a revoked user issued at or before the revocation is
refused (``token revoked``); a token of a revoked user that carries no ``iat`` cannot be judged
that way, so it goes to the backend every time, never served from the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Final

from gogate.auth.cache import DEFAULT_MAX_ENTRIES, Hook, ValidationCache, token_digest
from gogate.auth.claims import numeric_claim, peek_claims, user_from_claims
from gogate.auth.revocations import Revocations
from gogate.auth.verifier import JwtVerifier, build_verifier, refusal
from gogate.config import Settings
from gogate.errors import AuthFailed
from gogate.models import User

__all__ = ["Authenticator", "Validate"]

Validate = Callable[[str], Coroutine[Any, Any, User]]
"""Asks the backend who holds a token; raises AuthFailed when it refuses."""

Outcome = Callable[[str], None]
"""Told the outcome of each local verification: ``accepted`` or the reason of the refusal."""

_PREFIX: Final = len("Authentication failed: ")


def _ignore(outcome: str) -> None:
    pass


def _nothing() -> None:
    pass


class Authenticator:
    """Authenticates tokens for one worker.

    ``validate`` is the backend call. ``on_cache_hit`` counts tokens answered from the cache (or
    by a backend call already in flight), ``on_cache_miss`` backend validations made;
    ``on_local`` is told the outcome of every token decided locally (``accepted`` or the
    reason of the refusal), kept ones included.
    """

    def __init__(self, validate: Validate, *, verifier: JwtVerifier | None = None,
                 cache_ttl: float = 60.0, cache_size: int = DEFAULT_MAX_ENTRIES,
                 revocations: Revocations | None = None,
                 clock: Callable[[], float] = time.time, on_cache_hit: Hook | None = None,
                 on_cache_miss: Hook | None = None, on_local: Outcome | None = None) -> None:
        self._validate = validate
        self._verifier = verifier
        self.cache = ValidationCache(cache_ttl, cache_size, clock=clock, on_hit=on_cache_hit,
                                     on_miss=on_cache_miss)
        self.revocations = revocations or Revocations(clock=clock)
        self._on_cache_hit = on_cache_hit or _nothing
        self._on_local = on_local or _ignore

    @classmethod
    def from_settings(cls, settings: Settings, validate: Validate, *,
                      on_cache_hit: Hook | None = None, on_cache_miss: Hook | None = None,
                      on_local: Outcome | None = None) -> Authenticator:
        """The authenticator the settings describe (``JWT_*``, ``AUTH_CACHE_TTL``); raises
        ConfigError when the key cannot verify the accepted algorithms."""
        verifier = build_verifier(settings.jwt_public_key, settings.jwt_secret,
                                  settings.jwt_algorithms, audience=settings.jwt_audience,
                                  issuer=settings.jwt_issuer)
        return cls(validate, verifier=verifier, cache_ttl=settings.auth_cache_ttl,
                   on_cache_hit=on_cache_hit, on_cache_miss=on_cache_miss, on_local=on_local)

    @property
    def local(self) -> bool:
        """Whether tokens are verified here rather than by the backend."""
        return self._verifier is not None

    async def authenticate(self, token: str) -> tuple[User, float | None]:
        """The user holding ``token`` and the token's expiry (its ``exp``, seconds since the
        epoch; None when it has none); AuthFailed when it is refused."""
        if self._verifier is not None:
            return await self._verify_locally(self._verifier, token)
        return await self._ask_backend(token)

    def forget(self, token: str) -> None:
        """The backend answered 401 to a call made with ``token``: validate it anew next time."""
        self.cache.forget(token_digest(token))

    def prune(self) -> None:
        """Forget the validations that expired."""
        self.cache.prune()

    def revoke(self, user_id: int, at: float) -> None:
        """The backend revoked the user at ``at`` (seconds since the epoch): refuse the user's
        tokens issued until then, and forget their validations."""
        self.revocations.revoke(user_id, at)
        self.cache.forget_user(user_id)

    def revoked_during(self, token: str, user_id: int, moment: float) -> bool:
        """Whether a revocation that reached this worker at or after ``moment`` (``time.time()``
        taken before :meth:`authenticate`) covers ``token`` of the user: then the connection
        must not be admitted, though the token was accepted a moment ago. A token without
        ``iat`` counts as covered (its next ``auth`` goes to the backend)."""
        if not self.revocations.arrived_since(user_id, moment):
            return False
        revoked = self.revocations.since(user_id)
        issued = numeric_claim(peek_claims(token), "iat")  # accepted already: safe to read
        return revoked is not None and (issued is None or issued <= revoked)

    async def _verify_locally(self, verifier: JwtVerifier, token: str
                              ) -> tuple[User, float | None]:
        key = token_digest(token)
        user = self.cache.lookup(key)
        try:
            if user is not None:
                self._on_cache_hit()
                claims = peek_claims(token)  # the very bytes whose signature was verified
            else:
                claims = verifier.verify(token)
                user = user_from_claims(claims)
                if user is None:
                    raise refusal("token names no user")
                self.cache.keep(key, user, numeric_claim(claims, "exp"))
            issued = numeric_claim(claims, "iat")
            expires = numeric_claim(claims, "exp")
            revoked = self.revocations.since(user.id)
            if revoked is not None and issued is not None and issued <= revoked:
                self.cache.forget(key)
                raise refusal("token revoked")
        except AuthFailed as exc:
            self._on_local(exc.message[_PREFIX:])
            raise
        self._on_local("accepted")
        if revoked is not None and issued is None:
            self.cache.forget(key)
            user = await self._validate(token)
        self._note_lifetime(issued, expires)
        return user, expires

    async def _ask_backend(self, token: str) -> tuple[User, float | None]:
        claims = peek_claims(token)  # read unverified: the backend verifies the token
        issued = numeric_claim(claims, "iat")
        expires = numeric_claim(claims, "exp")
        key = token_digest(token)
        user, current = await self.cache.get(key, expires, partial(self._validate, token))
        revoked = self.revocations.since(user.id)
        if revoked is not None:
            if issued is not None and issued <= revoked:
                self.cache.forget(key)
                raise refusal("token revoked")
            if issued is None:
                self.cache.forget(key)  # never reused while the revocation is in force
                if not current:  # the backend was asked before it revoked the user
                    user = await self._validate(token)
        self._note_lifetime(issued, expires)
        return user, expires

    def _note_lifetime(self, issued: float | None, expires: float | None) -> None:
        if issued is not None and expires is not None:
            self.revocations.saw_lifetime(expires - issued)
