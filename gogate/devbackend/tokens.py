"""RS256 JSON Web Tokens shaped like the real BuzzChat backend's (LexikJWT).

A token carries ``user_id``, ``email``, ``first_name``, ``last_name``, ``username`` (the
email, the backend's user identifier), ``roles``, ``iat`` and ``exp`` (whole seconds since the
epoch), signed with the backend's RSA key. It is valid while the current time is before
``exp``. Whoever holds the public key can verify a token without asking the backend; that is
what ``gogate --dev`` does.

Exceptions::

    TokenError
    ├── MalformedToken    not a JWT, not RS256, or without a user id, ``iat`` or ``exp``
    ├── BadSignature      well formed, but signed with another key
    └── TokenExpired      genuine, but ``exp`` has passed
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .records import User
from .store import Store

__all__ = ["ALGORITHM", "BadSignature", "MalformedToken", "TokenError", "TokenExpired",
           "TokenSigner", "new_private_key"]

ALGORITHM = "RS256"
KEY_SIZE = 2048  # bits: the smallest RSA key PyJWT and LexikJWT accept without a warning
_SETTING = "jwt_private_key"  # where the store keeps the key, as PKCS#8 PEM


class TokenError(Exception):
    """A token that does not identify a user."""


class MalformedToken(TokenError):
    """The token is not an RS256 JWT with the expected claims."""


class BadSignature(TokenError):
    """The token's signature does not match the backend's key."""


class TokenExpired(TokenError):
    """The token was genuine but its ``exp`` has passed."""


def new_private_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key pair for signing tokens."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


@functools.cache
def _process_key() -> rsa.RSAPrivateKey:
    """The key pair given to every fresh database of this process, made at first use.

    Making an RSA key takes 50-200 ms of CPU; a test run starts hundreds of backends, each on
    a fresh database, so they share the one their process made.
    """
    return new_private_key()


def _claims(user_id: int, user: User | None, issued: float, ttl: float) -> dict[str, Any]:
    exp = math.ceil(issued + ttl) if ttl > 0 else math.floor(issued + ttl)
    email = None if user is None else user.email
    return {"user_id": user_id, "email": email,
            "first_name": None if user is None else user.first_name,
            "last_name": None if user is None else user.last_name,
            "username": email if email is not None else str(user_id),
            "roles": ["ROLE_USER"] if user is None else list(user.roles),
            "iat": int(issued), "exp": exp}


class TokenSigner:
    """Issues and verifies the backend's tokens with one RSA key pair."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private = private_key
        self._public = private_key.public_key()
        self.public_pem: bytes = self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def for_store(cls, store: Store) -> TokenSigner:
        """The signer of the key kept in ``store``; a store without one gets the process's."""
        pem = store.setting(_SETTING)
        if pem is None:
            key = _process_key()
            fresh = key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode("ascii")
            pem = store.keep_setting(_SETTING, fresh)
            if pem == fresh:
                return cls(key)
        loaded = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError("the stored token key is not an RSA key")
        return cls(loaded)

    def issue(self, user_id: int, ttl: float, *, user: User | None = None,
              now: float | None = None) -> str:
        """Return a token for ``user_id`` (with the claims of ``user`` when given) that lives
        ``ttl`` seconds.

        A positive ``ttl`` is rounded up to the next whole second so the token lives at least
        that long; ``ttl <= 0`` gives a token that is already expired.
        """
        issued = time.time() if now is None else now
        return jwt.encode(_claims(user_id, user, issued, ttl), self._private,
                          algorithm=ALGORITHM)

    def verify(self, token: str) -> int:
        """Return the user id the token was issued for, or raise a :class:`TokenError`."""
        try:
            claims = jwt.decode(token, self._public, algorithms=[ALGORITHM],
                                options={"require": ["user_id", "iat", "exp"]})
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except jwt.InvalidSignatureError:
            raise BadSignature("token signature does not match") from None
        except jwt.InvalidTokenError as exc:
            raise MalformedToken(str(exc)) from None
        user_id = claims["user_id"]
        if type(user_id) is not int or user_id <= 0:
            raise MalformedToken("token user_id is not a user id")
        return user_id
