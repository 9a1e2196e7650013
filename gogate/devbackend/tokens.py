"""HS256 JSON Web Tokens, as the BuzzChat backend issues them to its users.

A token carries three claims: ``sub`` (the user id as a string), ``iat`` and ``exp``
(whole seconds since the epoch). It is valid while the current time is before ``exp``.

Exceptions::

    TokenError
    ├── MalformedToken    not three base64url parts, not JSON, wrong algorithm, bad claims
    ├── BadSignature      well formed, but signed with another secret
    └── TokenExpired      genuine, but ``exp`` has passed
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from typing import Any

import msgspec

__all__ = [
    "BadSignature",
    "MalformedToken",
    "TokenError",
    "TokenExpired",
    "issue_token",
    "verify_token",
]


class TokenError(Exception):
    """A token that does not identify a user."""


class MalformedToken(TokenError):
    """The token is not a well-formed HS256 JWT with the expected claims."""


class BadSignature(TokenError):
    """The token's signature does not match the secret."""


class TokenExpired(TokenError):
    """The token was genuine but its ``exp`` has passed."""


_HEADER = b'{"alg":"HS256","typ":"JWT"}'
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _b64decode(part: bytes) -> bytes:
    """Decode unpadded base64url, refusing (ValueError) any byte outside its alphabet."""
    if part.translate(None, _B64URL_ALPHABET):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def _sign(secret: bytes, signing_input: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def issue_token(secret: bytes, user_id: int, ttl: float, *, now: float | None = None) -> str:
    """Return a token for ``user_id`` that lives ``ttl`` seconds.

    A positive ``ttl`` is rounded up to the next whole second so the token lives at least
    that long; ``ttl <= 0`` gives a token that is already expired.
    """
    issued = time.time() if now is None else now
    exp = math.ceil(issued + ttl) if ttl > 0 else math.floor(issued + ttl)
    claims = {"sub": str(user_id), "iat": int(issued), "exp": exp}
    signing_input = _b64encode(_HEADER) + b"." + _b64encode(_ENCODER.encode(claims))
    signature = _b64encode(_sign(secret, signing_input))
    return (signing_input + b"." + signature).decode("ascii")


def _decode_object(part: bytes) -> dict[str, Any]:
    try:
        value = _DECODER.decode(_b64decode(part))
    except (ValueError, msgspec.DecodeError) as exc:
        raise MalformedToken("token part is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken("token part is not a JSON object")
    return value


def verify_token(secret: bytes, token: str, *, now: float | None = None) -> int:
    """Return the user id the token was issued for, or raise a :class:`TokenError`."""
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError as exc:
        raise MalformedToken("token is not ASCII") from exc
    parts = raw.split(b".")
    if len(parts) != 3:
        raise MalformedToken("token does not have three parts")
    header_part, payload_part, signature_part = parts

    header = _decode_object(header_part)
    if header.get("alg") != "HS256":
        raise MalformedToken("token algorithm is not HS256")
    try:
        signature = _b64decode(signature_part)
    except ValueError as exc:
        raise MalformedToken("token signature is not base64url") from exc
    expected = _sign(secret, header_part + b"." + payload_part)
    if not hmac.compare_digest(signature, expected):
        raise BadSignature("token signature does not match")

    claims = _decode_object(payload_part)
    sub, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit():
        raise MalformedToken("token subject is not a user id")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise MalformedToken("token has no expiry")
    current = time.time() if now is None else now
    if exp <= current:
        raise TokenExpired("token expired")
    return int(sub)
