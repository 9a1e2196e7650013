"""Local verification of JWTs: signature, algorithm, ``exp``, ``nbf``, ``aud`` and ``iss``,
with PyJWT, so that ``auth`` needs no backend call.

The key is either a PEM public key (or certificate) file, whose family decides the algorithms
accepted by default (RS*/PS* for RSA, the ES* of its curve for EC, EdDSA for Ed25519/Ed448), or
an HMAC secret (HS256/HS384/HS512). ``none`` is never accepted, nor an algorithm of another
family than the key (that closes the classic confusion of an RSA public key used as an HMAC
secret), nor a key shorter than its algorithm needs (RFC 7518: an HMAC secret at least as long
as the hash; RSA at least 2048 bits). Every refusal raises
:class:`~gogate.errors.AuthFailed` with ``Authentication failed: <reason>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gogate.errors import AuthFailed, ConfigError

__all__ = ["DEFAULT_LEEWAY", "MAX_LEEWAY", "JwtVerifier", "TokenRefused", "build_verifier",
           "default_algorithms", "refusal"]

# Seconds of clock difference tolerated on exp, nbf and iat: the backend and the gateway run on
# different machines. The contract allows at most 30; 10 keeps a token accepted just after its
# exp from being expired again at once on the connection.
DEFAULT_LEEWAY: Final = 10.0
MAX_LEEWAY: Final = 30.0

_RSA: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_HMAC: Final = ("HS256", "HS384", "HS512")
_CURVES: Final[dict[str, tuple[str, ...]]] = {
    "secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",),
    "secp256k1": ("ES256K",),
}

# PyJWT exceptions, most specific first, and the reason the client is told.
_REASONS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not accepted"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidIssuedAtError, "invalid iat"),
    (jwt.DecodeError, "malformed token"),
)
_MISSING: Final = {"exp": "token has no exp", "aud": "wrong audience", "iss": "wrong issuer"}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey \
    | ed448.Ed448PublicKey


class TokenRefused(AuthFailed):
    """A token the gateway itself refused (not the backend); ``reason`` is one of a fixed
    set of short phrases (``token expired``, ``bad signature``, ``token revoked``...), fit for
    a metric's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Authentication failed: {reason}")
        self.reason = reason


def refusal(reason: str) -> TokenRefused:
    """The error a refused token raises, worded like the backend's refusals."""
    return TokenRefused(reason)


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _MISSING.get(exc.claim, f"token has no {exc.claim}")
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid token"


class JwtVerifier:
    """Verifies tokens with one key; build it with :meth:`with_public_key` or
    :meth:`with_secret` (or :func:`build_verifier` from the settings)."""

    def __init__(self, key: PublicKey | bytes, algorithms: Sequence[str], *,
                 audience: str | None = None, issuer: str | None = None,
                 leeway: float = DEFAULT_LEEWAY) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ConfigError(f"JWT leeway must be between 0 and {MAX_LEEWAY:g} s, got {leeway}")
        family = _family(key)
        if not algorithms:
            raise ConfigError("JWT_ALGORITHMS: no algorithm accepted")
        wrong = [a for a in algorithms if a not in family]
        if wrong:
            raise ConfigError(f"invalid JWT_ALGORITHMS={','.join(algorithms)!r}: "
                              f"{', '.join(wrong)} cannot be used with this key "
                              f"(it takes {', '.join(family)})")
        for name in algorithms:
            algorithm = jwt.get_algorithm_by_name(name)
            try:
                weakness = algorithm.check_key_length(algorithm.prepare_key(key))
            except jwt.InvalidKeyError as exc:
                raise ConfigError(f"the JWT key cannot be used with {name}: {exc}") from None
            if weakness:
                raise ConfigError(f"the JWT key is too weak for {name}: {weakness}")
        self.algorithms: tuple[str, ...] = tuple(algorithms)
        self._key = key
        self._audience = audience or None
        self._issuer = issuer or None
        self._leeway = leeway
        self._jwt = jwt.PyJWT({
            "require": ["exp"],
            "verify_aud": self._audience is not None,
            "verify_sub": False,  # sub may be an integer user id
            "verify_jti": False,
            "enforce_minimum_key_length": True,
        })

    @classmethod
    def with_public_key(cls, pem: bytes, algorithms: Sequence[str] = (), *,
                        audience: str | None = None, issuer: str | None = None,
                        leeway: float = DEFAULT_LEEWAY) -> JwtVerifier:
        """A verifier for a PEM public key or certificate; ``algorithms`` default to the
        key's family."""
        key = _load_public_key(pem)
        return cls(key, algorithms or default_algorithms(key), audience=audience, issuer=issuer,
                   leeway=leeway)

    @classmethod
    def with_secret(cls, secret: str | bytes, algorithms: Sequence[str] = (), *,
                    audience: str | None = None, issuer: str | None = None,
                    leeway: float = DEFAULT_LEEWAY) -> JwtVerifier:
        """A verifier for an HMAC secret; ``algorithms`` default to those of HS256/384/512
        the secret is long enough for."""
        key = secret.encode() if isinstance(secret, str) else secret
        return cls(key, algorithms or default_algorithms(key), audience=audience, issuer=issuer,
                   leeway=leeway)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token that passes every check; AuthFailed with the reason else."""
        if token.count(".") != 2:
            raise refusal("not a JWT")
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token, self._key, algorithms=self.algorithms, audience=self._audience,
                issuer=self._issuer, leeway=self._leeway)
        except jwt.PyJWTError as exc:
            raise refusal(_reason(exc)) from None
        return claims


def _family(key: PublicKey | bytes) -> tuple[str, ...]:
    """Every algorithm that may be used with this key."""
    if isinstance(key, bytes):
        return _HMAC
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name, ())
    return ("EdDSA",)


def default_algorithms(key: PublicKey | bytes) -> tuple[str, ...]:
    """The algorithms accepted when JWT_ALGORITHMS is empty: the key's family, leaving out
    HMAC variants whose hash is longer than the secret."""
    if isinstance(key, bytes):
        return tuple(a for a in _HMAC if len(key) * 8 >= int(a[2:])) or ("HS256",)
    return _family(key)


def _load_public_key(pem: bytes) -> PublicKey:
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = load_pem_public_key(pem)
    except ValueError:
        raise ConfigError("JWT_PUBLIC_KEY does not hold a PEM public key or certificate") \
            from None
    if not isinstance(key, PublicKey):
        raise ConfigError(f"JWT_PUBLIC_KEY holds a {type(key).__name__}: "
                          "use an RSA, EC, Ed25519 or Ed448 key")
    return key


def build_verifier(public_key: str, secret: str, algorithms: Sequence[str], *,
                   audience: str = "", issuer: str = "", leeway: float = DEFAULT_LEEWAY
                   ) -> JwtVerifier | None:
    """The verifier the settings ask for (``JWT_PUBLIC_KEY`` is a file path), or None when
    neither a key nor a secret is set: then the backend validates every token."""
    algorithms = [a.strip() for a in algorithms if a.strip()]
    if any(a.lower() == "none" for a in algorithms):
        raise ConfigError("invalid JWT_ALGORITHMS: 'none' is never accepted")
    if public_key and secret:
        raise ConfigError("JWT_PUBLIC_KEY and JWT_SECRET cannot both be set")
    if public_key:
        try:
            pem = Path(public_key).read_bytes()
        except OSError as exc:
            raise ConfigError(f"invalid JWT_PUBLIC_KEY={public_key!r}: {exc.strerror}") from None
        return JwtVerifier.with_public_key(pem, algorithms, audience=audience, issuer=issuer,
                                           leeway=leeway)
    if secret:
        return JwtVerifier.with_secret(secret, algorithms, audience=audience, issuer=issuer,
                                       leeway=leeway)
    if algorithms or audience or issuer:
        raise ConfigError("JWT_ALGORITHMS, JWT_AUDIENCE and JWT_ISSUER need JWT_PUBLIC_KEY "
                          "or JWT_SECRET")
    return None
