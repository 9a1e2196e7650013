"""Revocation: after the backend disconnects a user, that user's tokens issued until then are
refused (``token revoked``) whether verified locally or by the backend; tokens without ``iat``
go to the backend; records are kept as long as a token issued before them can be valid."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_auth_cache import NOW, Backend, Clock, jwt_like

from gogate.auth import Authenticator, JwtVerifier, Revocations
from gogate.config import Settings
from gogate.errors import AuthFailed, ConfigError, ErrorCode
from gogate.models import User


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def local(rsa_key: rsa.RSAPrivateKey, backend: Backend) -> Authenticator:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return Authenticator(backend.validate, verifier=JwtVerifier.with_public_key(pem))


@pytest.fixture
def backend() -> Backend:
    return Backend()


def signed(key: rsa.RSAPrivateKey, user_id: int, iat: float | None) -> str:
    now = int(time.time())
    claims = {"user_id": user_id, "username": f"u{user_id}", "exp": now + 3600}
    if iat is not None:
        claims["iat"] = int(iat)
    return jwt.encode(claims, key, algorithm="RS256")


async def revoked_reason(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthFailed) as caught:
        await auth.authenticate(token)
    assert caught.value.code is ErrorCode.AUTH_FAILED
    return caught.value.message


# --- local verification -----------------------------------------------------------------------

async def test_local_tokens_issued_until_the_revocation_are_refused(
        local: Authenticator, rsa_key: rsa.RSAPrivateKey, backend: Backend) -> None:
    now = int(time.time())
    old, at_the_call, fresh = (signed(rsa_key, 1, now - 100), signed(rsa_key, 1, now - 50),
                               signed(rsa_key, 1, now - 10))
    other_user = signed(rsa_key, 2, now - 100)
    for token in (old, fresh, other_user):
        await local.authenticate(token)
    local.revoke(1, now - 50)
    assert await revoked_reason(local, old) == "Authentication failed: token revoked"
    assert await revoked_reason(local, at_the_call) == "Authentication failed: token revoked"
    assert (await local.authenticate(fresh))[0].id == 1
    assert (await local.authenticate(other_user))[0].id == 2
    assert backend.count() == 0


async def test_local_token_without_iat_of_a_revoked_user_goes_to_the_backend(
        local: Authenticator, rsa_key: rsa.RSAPrivateKey, backend: Backend) -> None:
    token = signed(rsa_key, 1, None)
    user, _ = await local.authenticate(token)
    assert user == User(1, "u1", None) and backend.count() == 0
    local.revoke(1, time.time())
    assert (await local.authenticate(token))[0].id == 1
    assert (await local.authenticate(token))[0].id == 1
    assert backend.count(token) == 2
    backend.refused.add(token)
    assert await revoked_reason(local, token) == "Authentication failed: invalid token"


async def test_local_outcomes_are_reported(rsa_key: rsa.RSAPrivateKey, backend: Backend) -> None:
    outcomes: list[str] = []
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    auth = Authenticator(backend.validate, verifier=JwtVerifier.with_public_key(pem),
                         on_local=outcomes.append)
    now = time.time()
    await auth.authenticate(signed(rsa_key, 1, now - 100))
    auth.revoke(1, now - 50)
    with pytest.raises(AuthFailed):
        await auth.authenticate(signed(rsa_key, 1, now - 100))
    with pytest.raises(AuthFailed):
        await auth.authenticate("opaque")
    with pytest.raises(AuthFailed, match="token names no user"):
        await auth.authenticate(jwt.encode({"sub": "john", "exp": int(now) + 60}, rsa_key,
                                           algorithm="RS256"))
    assert outcomes == ["accepted", "token revoked", "not a JWT", "token names no user"]


async def test_local_expiry_is_the_exp(local: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    token = jwt.encode({"user_id": 3, "iat": now, "exp": now + 900}, rsa_key, algorithm="RS256")
    assert await local.authenticate(token) == (User(3, "user 3", None), float(now + 900))


# --- backend validation -----------------------------------------------------------------------

@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def remote(backend: Backend, clock: Clock) -> Authenticator:
    return Authenticator(backend.validate, cache_ttl=60, clock=clock)


async def test_backend_tokens_issued_until_the_revocation_are_refused(
        remote: Authenticator, backend: Backend) -> None:
    old = jwt_like(1, iat=NOW - 100, exp=NOW + 3000)
    fresh = jwt_like(1, iat=NOW + 1, exp=NOW + 3000)
    await remote.authenticate(old)
    remote.revoke(1, NOW)
    assert await revoked_reason(remote, old) == "Authentication failed: token revoked"
    assert await revoked_reason(remote, old) == "Authentication failed: token revoked"
    assert (await remote.authenticate(fresh))[0].id == 1
    assert (await remote.authenticate(fresh))[0].id == 1
    assert backend.count(fresh) == 1  # a token issued after the revocation is reused again


async def test_revocation_drops_the_users_kept_validations(remote: Authenticator,
                                                           backend: Backend) -> None:
    mine, other = "opaque-1", "opaque-2"
    await remote.authenticate(mine)
    await remote.authenticate(other)
    remote.revoke(1, NOW)
    await remote.authenticate(mine)
    await remote.authenticate(other)
    assert (backend.count(mine), backend.count(other)) == (2, 1)


async def test_backend_token_without_iat_is_asked_every_time(remote: Authenticator,
                                                             backend: Backend) -> None:
    token = jwt_like(1, exp=NOW + 3000)
    await remote.authenticate(token)
    await remote.authenticate(token)
    assert backend.count(token) == 1
    remote.revoke(1, NOW)
    for calls in (2, 3, 4):
        assert (await remote.authenticate(token))[0].id == 1
        assert backend.count(token) == calls


async def test_a_validation_in_flight_during_the_revocation_is_refused(
        remote: Authenticator, backend: Backend) -> None:
    backend.gate = asyncio.Event()
    token = jwt_like(1, iat=NOW - 100, exp=NOW + 3000)
    pending = asyncio.create_task(remote.authenticate(token))
    await asyncio.sleep(0.01)
    remote.revoke(1, NOW)
    backend.gate.set()
    with pytest.raises(AuthFailed, match="token revoked"):
        await pending


async def test_a_token_without_iat_validated_across_the_revocation_is_asked_again(
        remote: Authenticator, backend: Backend) -> None:
    backend.gate = asyncio.Event()
    token = "opaque-1"
    pending = [asyncio.create_task(remote.authenticate(token)) for _ in range(2)]
    await asyncio.sleep(0.01)
    remote.revoke(1, NOW)
    backend.gate.set()
    assert [user.id for user, _ in await asyncio.gather(*pending)] == [1, 1]
    assert backend.count(token) == 3  # the shared call, then each asks again


# --- the records ------------------------------------------------------------------------------

def test_a_record_lasts_the_horizon(clock: Clock) -> None:
    revocations = Revocations(clock=clock)
    revocations.revoke(1, NOW)
    assert revocations.refuses(1, NOW) and not revocations.refuses(1, NOW + 1)
    assert not revocations.refuses(2, NOW)
    clock.now = NOW + 24 * 3600 - 1
    assert revocations.since(1) == NOW
    clock.now = NOW + 24 * 3600
    assert revocations.since(1) is None and len(revocations) == 0


def test_a_longer_token_lifetime_keeps_records_longer(clock: Clock) -> None:
    revocations = Revocations(clock=clock)
    revocations.saw_lifetime(7 * 24 * 3600)
    revocations.revoke(1, NOW)
    clock.now = NOW + 6 * 24 * 3600
    assert revocations.refuses(1, NOW - 10)
    clock.now = NOW + 7 * 24 * 3600
    assert not revocations.refuses(1, NOW - 10)


async def test_accepted_tokens_teach_the_lifetime(remote: Authenticator) -> None:
    await remote.authenticate(jwt_like(1, iat=NOW, exp=NOW + 30 * 24 * 3600))
    assert remote.revocations.horizon == 30 * 24 * 3600


def test_the_latest_revocation_wins_and_records_can_be_handed_on(clock: Clock) -> None:
    revocations = Revocations(clock=clock)
    revocations.revoke(1, NOW)
    revocations.revoke(1, NOW - 500)
    revocations.revoke(2, NOW - 10)
    assert revocations.since(1) == NOW
    assert sorted(revocations) == [(1, NOW), (2, NOW - 10)]


def test_old_records_are_swept(clock: Clock) -> None:
    revocations = Revocations(clock=clock)
    for user_id in range(100):
        revocations.revoke(user_id, NOW)
    clock.now = NOW + 25 * 3600
    revocations.revoke(1000, clock.now)
    assert len(revocations) == 1


# --- local verifications kept -----------------------------------------------------------------

async def test_a_verified_token_is_kept(rsa_key: rsa.RSAPrivateKey, backend: Backend) -> None:
    outcomes: list[str] = []
    hits: list[None] = []
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    auth = Authenticator(backend.validate, verifier=JwtVerifier.with_public_key(pem),
                         on_local=outcomes.append, on_cache_hit=lambda: hits.append(None))
    now = time.time()
    token = signed(rsa_key, 1, now - 100)
    first = await auth.authenticate(token)
    assert await auth.authenticate(token) == first
    assert (len(hits), outcomes) == (1, ["accepted", "accepted"])
    auth.revoke(1, now - 50)
    assert await revoked_reason(auth, token) == "Authentication failed: token revoked"
    assert len(hits) == 1 and backend.count() == 0


async def test_ttl_zero_verifies_every_time(rsa_key: rsa.RSAPrivateKey, backend: Backend) -> None:
    hits: list[None] = []
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    auth = Authenticator(backend.validate, verifier=JwtVerifier.with_public_key(pem),
                         cache_ttl=0, on_cache_hit=lambda: hits.append(None))
    token = signed(rsa_key, 1, time.time())
    await auth.authenticate(token)
    await auth.authenticate(token)
    assert hits == [] and len(auth.cache) == 0


# --- built from the settings ------------------------------------------------------------------

async def test_from_settings(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                             backend: Backend) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    local = Authenticator.from_settings(
        Settings(jwt_public_key=str(path), jwt_algorithms=("RS256",), jwt_audience="buzzchat"),
        backend.validate)
    assert local.local
    now = int(time.time())
    token = jwt.encode({"user_id": 1, "aud": "buzzchat", "exp": now + 60}, rsa_key,
                       algorithm="RS256")
    assert (await local.authenticate(token))[0].id == 1
    with pytest.raises(AuthFailed, match="algorithm not accepted"):
        await local.authenticate(jwt.encode({"user_id": 1, "aud": "buzzchat", "exp": now + 60},
                                            rsa_key, algorithm="PS256"))
    remote = Authenticator.from_settings(Settings(auth_cache_ttl=0), backend.validate)
    assert not remote.local and remote.cache.ttl == 0
    with pytest.raises(ConfigError, match="weak"):
        Authenticator.from_settings(Settings(jwt_secret="short"), backend.validate)
    assert backend.count() == 0


async def test_a_revocation_arriving_during_an_authentication_is_seen(
        remote: Authenticator, clock: Clock) -> None:
    begun = clock.now
    old, fresh = jwt_like(1, iat=NOW - 10, exp=NOW + 3000), jwt_like(1, iat=NOW + 1, exp=NOW + 9)
    for token in (old, fresh, "opaque-1"):
        await remote.authenticate(token)
        assert not remote.revoked_during(token, 1, begun)
    clock.now += 0.5
    remote.revoke(1, NOW)
    assert remote.revoked_during(old, 1, begun)
    assert remote.revoked_during("opaque-1", 1, begun)
    assert not remote.revoked_during(fresh, 1, begun)
    assert not remote.revoked_during(old, 1, clock.now + 1)  # began after it arrived
    assert not remote.revoked_during("opaque-2", 2, begun)
