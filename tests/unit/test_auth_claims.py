"""The user a token's claims name, and the claims read from a token the backend verifies."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gogate.auth import peek_claims, user_from_claims
from gogate.models import User


@pytest.mark.parametrize(("claims", "user_id"), [
    ({"user_id": 7, "sub": "8", "uid": 9}, 7),
    ({"user_id": "7"}, 7),
    ({"sub": "42"}, 42),
    ({"sub": 42}, 42),
    ({"uid": 5}, 5),
    ({"user_id": "john", "sub": "john@example.com", "uid": "12"}, 12),
    ({"user_id": True, "sub": "3"}, 3),
    ({"user_id": 1.5, "sub": "-4", "uid": 6}, 6),
    ({"user_id": "٣", "uid": 6}, 6),
])
def test_the_first_claim_holding_an_id_wins(claims: dict[str, Any], user_id: int) -> None:
    user = user_from_claims(claims)
    assert user is not None and user.id == user_id


def test_no_usable_id() -> None:
    assert user_from_claims({"sub": "john@example.com", "username": "john"}) is None
    assert user_from_claims({}) is None


@pytest.mark.parametrize(("claims", "name"), [
    ({"name": "Neo", "full_name": "Thomas Anderson", "first_name": "T"}, "Neo"),
    ({"name": " ", "full_name": "Thomas Anderson", "username": "neo"}, "Thomas Anderson"),
    ({"first_name": "John", "last_name": "Doe", "username": "john@x"}, "John Doe"),
    ({"first_name": "John", "username": "john@x"}, "John"),
    ({"username": "john@example.com"}, "john@example.com"),
    ({}, "user 1"),
])
def test_name(claims: dict[str, Any], name: str) -> None:
    assert user_from_claims({"user_id": 1, **claims}) == User(1, name, None)


def test_phone() -> None:
    assert user_from_claims({"user_id": 1, "phone": "+7999"}) == User(1, "user 1", "+7999")
    assert user_from_claims({"user_id": 1, "phone": 7999}) == User(1, "user 1", None)


def b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_peek_reads_an_unverified_jwt() -> None:
    token = f"{b64({'alg': 'RS256'})}.{b64({'iat': 1, 'exp': 2})}.signature"
    assert peek_claims(token) == {"iat": 1, "exp": 2}


@pytest.mark.parametrize("token", ["opaque", "a.b", "..", f"{b64({})}.{b64([1])}.s",
                                   f"{b64({})}.!!!.s", f"{b64({})}.{b64('x')[:-1]}.s"])
def test_peek_at_what_is_not_a_jwt(token: str) -> None:
    assert peek_claims(token) is None
