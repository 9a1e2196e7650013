"""Local JWT verification: the tokens it accepts, the user it reads from them, every refusal
with the reason the client is told, and the key settings it refuses to start with."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from gogate.auth import JwtVerifier, build_verifier
from gogate.errors import AuthFailed, ConfigError, ErrorCode
from gogate.models import User

SECRET = "s" * 64


def pem(private: Any) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def lexik_claims(**changes: Any) -> dict[str, Any]:
    """The claims of the real backend's tokens (LexikJWT)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + 3600, "roles": ["ROLE_USER"],
                              "username": "john@example.com", "user_id": 1,
                              "email": "john@example.com", "first_name": "John",
                              "last_name": "Doe"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def refusal_of(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(AuthFailed) as caught:
        verifier.verify(token)
    assert caught.value.code is ErrorCode.AUTH_FAILED
    return caught.value.message


# --- accepted tokens --------------------------------------------------------------------------

def test_rs256_token_of_the_real_backend(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    claims = verifier.verify(jwt.encode(lexik_claims(), rsa_key, algorithm="RS256"))
    assert claims["user_id"] == 1 and claims["roles"] == ["ROLE_USER"]
    assert verifier.algorithms == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def test_ps256_with_an_rsa_key_by_default(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    assert verifier.verify(jwt.encode(lexik_claims(), rsa_key, algorithm="PS256"))["user_id"] == 1


def test_es256_with_a_p256_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = JwtVerifier.with_public_key(pem(key))
    assert verifier.algorithms == ("ES256",)
    assert verifier.verify(jwt.encode(lexik_claims(), key, algorithm="ES256"))["user_id"] == 1


def test_es384_with_a_p384_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    verifier = JwtVerifier.with_public_key(pem(key))
    assert verifier.algorithms == ("ES384",)
    assert verifier.verify(jwt.encode(lexik_claims(), key, algorithm="ES384"))["user_id"] == 1


def test_eddsa_with_an_ed25519_key() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    verifier = JwtVerifier.with_public_key(pem(key))
    assert verifier.algorithms == ("EdDSA",)
    assert verifier.verify(jwt.encode(lexik_claims(), key, algorithm="EdDSA"))["user_id"] == 1


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_hmac_secret(algorithm: str) -> None:
    verifier = JwtVerifier.with_secret(SECRET)
    token = jwt.encode(lexik_claims(), SECRET, algorithm=algorithm)
    assert verifier.verify(token)["user_id"] == 1


def test_a_certificate_gives_its_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "buzzchat")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(rsa_key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(rsa_key, hashes.SHA256()))
    verifier = JwtVerifier.with_public_key(cert.public_bytes(serialization.Encoding.PEM))
    assert verifier.verify(jwt.encode(lexik_claims(), rsa_key, algorithm="RS256"))["user_id"] == 1


def test_audience_and_issuer_when_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key), audience="buzzchat", issuer="https://api")
    token = jwt.encode(lexik_claims(aud=["other", "buzzchat"], iss="https://api"), rsa_key,
                       algorithm="RS256")
    assert verifier.verify(token)["user_id"] == 1


def test_an_audience_is_not_checked_when_none_is_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    token = jwt.encode(lexik_claims(aud="anything", iss="anyone"), rsa_key, algorithm="RS256")
    assert verifier.verify(token)["user_id"] == 1


def test_a_token_just_past_exp_is_accepted_within_the_leeway(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key), leeway=10)
    token = jwt.encode(lexik_claims(exp=int(time.time()) - 3), rsa_key, algorithm="RS256")
    assert verifier.verify(token)["user_id"] == 1


# --- refusals ---------------------------------------------------------------------------------

def test_bad_signature(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    forged = jwt.encode(lexik_claims(), other_rsa_key, algorithm="RS256")
    assert refusal_of(verifier, forged) == "Authentication failed: bad signature"


def test_changed_claims_break_the_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    header, _, signature = jwt.encode(lexik_claims(), rsa_key, algorithm="RS256").split(".")
    admin = base64.urlsafe_b64encode(json.dumps(lexik_claims(user_id=2)).encode())
    token = f"{header}.{admin.decode().rstrip('=')}.{signature}"
    assert refusal_of(verifier, token) == "Authentication failed: bad signature"


def test_expired(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key), leeway=10)
    now = int(time.time())
    token = jwt.encode(lexik_claims(iat=now - 3700, exp=now - 100), rsa_key, algorithm="RS256")
    assert refusal_of(verifier, token) == "Authentication failed: token expired"


def test_not_before_in_the_future(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    token = jwt.encode(lexik_claims(nbf=int(time.time()) + 600), rsa_key, algorithm="RS256")
    assert refusal_of(verifier, token) == "Authentication failed: token not yet valid"


def test_alg_none(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    token = jwt.encode(lexik_claims(), "", algorithm="none")
    assert refusal_of(verifier, token) == "Authentication failed: algorithm not accepted"
    unsigned = token.rstrip(".") + ".c2ln"
    assert refusal_of(verifier, unsigned) == "Authentication failed: algorithm not accepted"


def test_public_key_used_as_hmac_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic confusion: HS256 signed with the (public) RSA key as its secret."""
    verifier = JwtVerifier.with_public_key(pem(rsa_key))

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps(lexik_claims()).encode()))
    mac = hmac.new(pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    assert refusal_of(verifier, token) == "Authentication failed: algorithm not accepted"


def test_algorithm_not_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key), ["RS256"])
    token = jwt.encode(lexik_claims(), rsa_key, algorithm="RS384")
    assert refusal_of(verifier, token) == "Authentication failed: algorithm not accepted"


def test_wrong_audience(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key), audience="buzzchat")
    wrong = jwt.encode(lexik_claims(aud="billing"), rsa_key, algorithm="RS256")
    missing = jwt.encode(lexik_claims(), rsa_key, algorithm="RS256")
    assert refusal_of(verifier, wrong) == "Authentication failed: wrong audience"
    assert refusal_of(verifier, missing) == "Authentication failed: wrong audience"


def test_wrong_issuer(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key), issuer="https://api")
    wrong = jwt.encode(lexik_claims(iss="https://evil"), rsa_key, algorithm="RS256")
    missing = jwt.encode(lexik_claims(), rsa_key, algorithm="RS256")
    assert refusal_of(verifier, wrong) == "Authentication failed: wrong issuer"
    assert refusal_of(verifier, missing) == "Authentication failed: wrong issuer"


def test_missing_exp(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    token = jwt.encode(lexik_claims(exp=None), rsa_key, algorithm="RS256")
    assert refusal_of(verifier, token) == "Authentication failed: token has no exp"


@pytest.mark.parametrize("token", ["", "opaque-session-token", "a.b", "a.b.c.d"])
def test_not_a_jwt(rsa_key: rsa.RSAPrivateKey, token: str) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    assert refusal_of(verifier, token) == "Authentication failed: not a JWT"


def test_three_segments_of_garbage(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    assert refusal_of(verifier, "x.y.z") == "Authentication failed: malformed token"


def test_hmac_token_signed_with_another_secret() -> None:
    verifier = JwtVerifier.with_secret(SECRET)
    token = jwt.encode(lexik_claims(), "t" * 64, algorithm="HS256")
    assert refusal_of(verifier, token) == "Authentication failed: bad signature"


# --- key settings -----------------------------------------------------------------------------

def test_none_is_never_configurable() -> None:
    with pytest.raises(ConfigError, match="none"):
        build_verifier("", SECRET, ["HS256", "none"])


def test_key_and_secret_together_are_refused(tmp_path: Path,
                                             rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(pem(rsa_key))
    with pytest.raises(ConfigError, match="both"):
        build_verifier(str(path), SECRET, [])


def test_an_algorithm_of_another_family_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError, match="HS256"):
        JwtVerifier.with_public_key(pem(rsa_key), ["RS256", "HS256"])
    with pytest.raises(ConfigError, match="ES384"):
        JwtVerifier.with_public_key(pem(ec.generate_private_key(ec.SECP256R1())), ["ES384"])


def test_weak_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="weak"):
        JwtVerifier.with_secret("short")
    with pytest.raises(ConfigError, match="weak"):
        JwtVerifier.with_secret("s" * 32, ["HS512"])
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="weak"):
        JwtVerifier.with_public_key(pem(weak_rsa))


def test_a_32_byte_secret_accepts_hs256_only_by_default() -> None:
    assert JwtVerifier.with_secret("s" * 32).algorithms == ("HS256",)
    assert JwtVerifier.with_secret(SECRET).algorithms == ("HS256", "HS384", "HS512")


def test_leeway_is_at_most_30_seconds() -> None:
    with pytest.raises(ConfigError, match="leeway"):
        JwtVerifier.with_secret(SECRET, leeway=31)


def test_build_verifier_reads_the_key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(pem(rsa_key))
    verifier = build_verifier(str(path), "", ["RS256"], audience="buzzchat")
    assert verifier is not None and verifier.algorithms == ("RS256",)
    token = jwt.encode(lexik_claims(aud="buzzchat"), rsa_key, algorithm="RS256")
    assert verifier.verify(token)["user_id"] == 1


def test_build_verifier_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        build_verifier(str(tmp_path / "missing.pem"), "", [])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        build_verifier(str(garbage), "", [])
    with pytest.raises(ConfigError, match="need"):
        build_verifier("", "", ["RS256"])
    assert build_verifier("", "", []) is None


def test_the_user_of_a_verified_token(rsa_key: rsa.RSAPrivateKey) -> None:
    from gogate.auth import user_from_claims

    verifier = JwtVerifier.with_public_key(pem(rsa_key))
    claims = verifier.verify(jwt.encode(lexik_claims(phone="+79991234567"), rsa_key,
                                        algorithm="RS256"))
    assert user_from_claims(claims) == User(1, "John Doe", "+79991234567")
