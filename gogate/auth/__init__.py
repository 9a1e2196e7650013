"""Authentication of client tokens.

- :mod:`~gogate.auth.authenticator`: :class:`Authenticator`, the one entry point: verify a token
  locally or ask the backend, reuse validations, refuse revoked tokens;
- :mod:`~gogate.auth.verifier`: local JWT verification with PyJWT;
- :mod:`~gogate.auth.cache`: the bounded, expiring, single-flight cache of backend validations;
- :mod:`~gogate.auth.revocations`: users revoked by the backend, and since when;
- :mod:`~gogate.auth.claims`: the user and the times a token's claims carry.

Nothing here touches the network or the event loop's transports: the backend call is given to
the :class:`Authenticator` as a function.
"""

from gogate.auth.authenticator import Authenticator, Validate
from gogate.auth.cache import ValidationCache, token_digest
from gogate.auth.claims import peek_claims, user_from_claims
from gogate.auth.revocations import Revocations
from gogate.auth.verifier import JwtVerifier, TokenRefused, build_verifier

__all__ = [
    "Authenticator",
    "JwtVerifier",
    "Revocations",
    "TokenRefused",
    "Validate",
    "ValidationCache",
    "build_verifier",
    "peek_claims",
    "token_digest",
    "user_from_claims",
]
