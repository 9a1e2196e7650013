"""What the gateway reads from a token's claims: who the user is, and when the token was issued
and expires.

:func:`user_from_claims` turns the claims of a verified token into a :class:`~gogate.models.User`.
:func:`peek_claims` reads the claims of a JWT *without* verifying it; it is used only where the
backend verifies the token, to learn its ``iat`` and ``exp`` (how long a validation may be reused,
and whether a revocation covers it).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from gogate.models import User

__all__ = ["numeric_claim", "peek_claims", "user_from_claims"]

_ID_CLAIMS: Final = ("user_id", "sub", "uid")
_NAME_CLAIMS: Final = ("name", "full_name")
_decode_object: Final = msgspec.json.Decoder(dict[str, Any]).decode


def _user_id(value: object) -> int | None:
    """An integer, or a string of ASCII digits, as a user id; anything else is no id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def user_from_claims(claims: Mapping[str, Any]) -> User | None:
    """The user a token speaks for, or None when no claim holds a usable id.

    The id comes from ``user_id``, else ``sub``, else ``uid``: the first of them holding an
    integer or a string of digits. The name from ``name``, else ``full_name``, else
    ``first_name`` and ``last_name``, else ``username`` (the claims of LexikJWT tokens); the
    phone from ``phone``.
    """
    user_id = None
    for key in _ID_CLAIMS:
        user_id = _user_id(claims.get(key))
        if user_id is not None:
            break
    else:
        return None
    name = next((t for t in map(_text, map(claims.get, _NAME_CLAIMS)) if t is not None), None)
    if name is None:
        parts = (_text(claims.get("first_name")), _text(claims.get("last_name")))
        name = " ".join(p for p in parts if p is not None) or _text(claims.get("username"))
    phone = claims.get("phone")
    return User(user_id, name or f"user {user_id}", phone if isinstance(phone, str) else None)


def numeric_claim(claims: Mapping[str, Any] | None, key: str) -> float | None:
    """A NumericDate claim (``exp``, ``iat``) as seconds since the epoch, or None."""
    value = None if claims is None else claims.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def peek_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT read without checking its signature, or None when the token is
    not a JWT. Never trust them for who the user is: only the backend, or a verified
    signature, says that."""
    header, dot, rest = token.partition(".")
    payload, dot2, _signature = rest.partition(".")
    if not (dot and dot2 and header and payload):
        return None
    try:
        return _decode_object(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
