"""Authentication and the limits around it, as a client sees them: failed, timed out, repeated
and expiring auth, pipelining, connections per user and the per-connection rate limit; the
validation cache (reuse, single flight, refusals and 401s not remembered) counted at the real
development backend; local JWT verification and each of its refusals over the wire; a key that
cannot verify stopping startup; ``--dev`` verifying the development backend's tokens itself."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import (
    CAROL_DAVE,
    GENERAL,
    JANE,
    JOHN,
    JOHN_JANE,
    Client,
    Connect,
    MakeGateway,
    StartProcess,
    backend_calls,
    backend_post,
    clear_fault,
    client_factory,
    free_port,
    http_get,
    metric_value,
    metrics_text,
    set_fault,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from rawws import wait_for_tokens

from gogate.devbackend import DevBackend


async def mint(backend: DevBackend, user_id: int, ttl: float) -> str:
    """A token from the development backend; ``ttl <= 0`` gives an expired one."""
    token: str = (await backend_post(backend, "/api/dev/tokens",
                                     {"user_id": user_id, "ttl": ttl}))["token"]
    return token


async def answers(client: Client, *events: str) -> dict[str, dict[str, Any]]:
    """The next frames, which must be exactly ``events`` in any order; by event name."""
    got = [await client.recv() for _ in events]
    assert sorted(f["event"] for f in got) == sorted(events), got
    return {f["event"]: f for f in got}


async def works(client: Client, user_id: int, chat_id: int = GENERAL) -> None:
    """The connection is open, authenticated as ``user_id``, and its writes reach the backend."""
    await client.send("send_message", {"chat_id": chat_id, "text": "still works"}, ref="w")
    got = await answers(client, "new_message", "ack")
    assert got["ack"]["ref"] == "w"
    assert got["new_message"]["data"]["user"]["id"] == user_id


# --- failed auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "reason"), [
    ("garbage", "Invalid token"),
    ("expired", "Token expired"),
    ("missing user", None),  # the backend answers {"valid": false}: no reason of its own
])
async def test_refused_token_is_auth_failed_with_the_backends_reason(
        connect: Connect, backend: DevBackend, kind: str, reason: str | None) -> None:
    token = {"garbage": "not-a-token",
             "expired": await mint(backend, JOHN, -60),
             "missing user": await mint(backend, 424242, 3600)}[kind]
    client = await connect()
    await client.send("auth", {"token": token}, ref="a")
    frame = await client.expect_error("AUTH_FAILED")
    assert frame["ref"] == "a"
    message = frame["data"]["message"]
    if reason is None:
        assert message.startswith("Authentication failed: ")
        assert len(message) > len("Authentication failed: ")
    else:
        assert message == f"Authentication failed: {reason}"
    await client.silent(0.2)  # the first failure does not close


async def test_two_failed_auths_keep_the_connection_open(connect: Connect,
                                                         tokens: dict[int, str]) -> None:
    client = await connect()
    for attempt in range(2):
        await client.send("auth", {"token": f"bad-{attempt}"}, ref=attempt)
        assert (await client.expect_error("AUTH_FAILED"))["ref"] == attempt
    await client.silent(0.2)
    assert (await client.auth(tokens[JOHN]))["user_id"] == JOHN
    await works(client, JOHN)


async def test_third_failed_auth_closes_1008(connect: Connect) -> None:
    client = await connect()
    for attempt in range(3):
        await client.send("auth", {"token": f"bad-{attempt}"})
        await client.expect_error("AUTH_FAILED")
    assert await client.closed() == 1008


# --- auth timeout -----------------------------------------------------------------------------


async def test_no_auth_within_auth_timeout_is_closed_1008(make_gateway: MakeGateway,
                                                          tokens: dict[int, str]) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        opened = time.monotonic()
        idle = await connect()
        busy = await connect()  # events other than a successful auth do not extend it
        await busy.send("auth", {"token": "bad"})
        await busy.expect_error("AUTH_FAILED")
        await busy.send("typing", {"chat_id": GENERAL, "is_typing": True})
        await busy.expect_error("AUTH_REQUIRED")
        assert await idle.closed(timeout=3) == 1008
        assert time.monotonic() - opened >= 0.45  # not before the deadline
        assert await busy.closed(timeout=3) == 1008


async def test_authenticated_connection_outlives_the_auth_deadline(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])
        await client.silent(1.0)
        await works(client, JOHN)


# --- repeated auth ----------------------------------------------------------------------------


async def test_reauth_with_a_fresh_token_of_the_same_user(connect: Connect, backend: DevBackend,
                                                         tokens: dict[int, str]) -> None:
    client = await connect(tokens[JOHN])
    fresh = await mint(backend, JOHN, 3600)
    await client.send("auth", {"token": fresh}, ref="again")
    frame = await client.expect("auth_success")
    assert frame["ref"] == "again" and frame["data"]["user_id"] == JOHN
    await works(client, JOHN)


async def test_auth_as_another_user_is_already_authenticated(connect: Connect,
                                                            tokens: dict[int, str]) -> None:
    john = await connect(tokens[JOHN])
    jane = await connect(tokens[JANE])
    await john.send("auth", {"token": tokens[JANE]}, ref="switch")
    frame = await john.expect_error("ALREADY_AUTHENTICATED")
    assert frame["ref"] == "switch"

    await works(john, JOHN, JOHN_JANE)  # still John: his message, in his chat
    assert (await jane.expect("new_message"))["data"]["user"]["id"] == JOHN
    await john.send("typing", {"chat_id": CAROL_DAVE, "is_typing": True}, ref="t")
    assert (await john.expect_error("NOT_A_MEMBER"))["ref"] == "t"


# --- token expiry -----------------------------------------------------------------------------


async def _expiring(backend: DevBackend, client: Client) -> float:
    """Authenticate with a token living about 1.5 s; returns its ``exp``."""
    token = await mint(backend, JOHN, 1.5)
    exp = _exp(token)
    await client.send("auth", {"token": token})
    await client.expect("auth_success")
    return exp


def _exp(token: str) -> float:
    """The ``exp`` claim of a JWT."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


async def test_expired_token_gets_auth_expired_then_closed_1008(make_gateway: MakeGateway,
                                                                backend: DevBackend) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        client = await connect()
        exp = await _expiring(backend, client)
        frame = await client.expect_error("AUTH_EXPIRED", timeout=exp - time.time() + 2)
        expired_at = time.time()
        assert expired_at >= exp - 0.05, "AUTH_EXPIRED came before the token's exp"
        assert expired_at <= exp + 0.5, "AUTH_EXPIRED came late"
        assert frame["data"]["message"]
        assert await client.closed(timeout=3) == 1008
        assert time.time() - expired_at >= 0.3  # it had AUTH_TIMEOUT to re-authenticate


async def test_fresh_auth_after_expiry_keeps_the_connection(make_gateway: MakeGateway,
                                                            backend: DevBackend) -> None:
    gateway = await make_gateway(auth_timeout=0.5)
    async with client_factory(gateway.port) as connect:
        client = await connect()
        exp = await _expiring(backend, client)
        await client.expect_error("AUTH_EXPIRED", timeout=exp - time.time() + 2)
        fresh = await mint(backend, JOHN, 3600)
        assert (await client.auth(fresh))["user_id"] == JOHN
        await client.silent(0.8)  # past the window: not closed
        await works(client, JOHN)


# --- pipelining -------------------------------------------------------------------------------


async def test_auth_pipelined_with_a_write(connect: Connect, tokens: dict[int, str]) -> None:
    jane = await connect(tokens[JANE])
    client = await connect()
    await client.send("auth", {"token": tokens[JOHN]}, ref="a")
    await client.send("send_message", {"chat_id": GENERAL, "text": "right away"}, ref="m")
    await client.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref="t")
    first = await client.expect("auth_success")
    assert first["ref"] == "a"
    got = await answers(client, "new_message", "ack", "ack")
    assert got["new_message"]["data"]["text"] == "right away"
    events = sorted([(await jane.recv())["event"] for _ in range(2)])
    assert events == ["new_message", "user_typing"]


async def test_failed_auth_pipelined_with_a_write(connect: Connect) -> None:
    client = await connect()
    await client.send("auth", {"token": "bad"}, ref="a")
    await client.send("send_message", {"chat_id": GENERAL, "text": "x"}, ref="m")
    assert (await client.expect_error("AUTH_FAILED"))["ref"] == "a"
    assert (await client.expect_error("AUTH_REQUIRED"))["ref"] == "m"


# --- connections per user ---------------------------------------------------------------------


async def test_too_many_connections_per_user(make_gateway: MakeGateway,
                                             tokens: dict[int, str]) -> None:
    gateway = await make_gateway(max_connections_per_user=2)
    async with client_factory(gateway.port) as connect:
        first, second = await connect(tokens[JOHN]), await connect(tokens[JOHN])
        third = await connect()
        await third.send("auth", {"token": tokens[JOHN]})
        await third.expect_error("TOO_MANY_CONNECTIONS")
        assert await third.closed() == 1008

        other = await connect(tokens[JANE])  # another user is not counted with John
        await works(first, JOHN)
        assert (await second.expect("new_message"))["data"]["text"] == "still works"
        assert (await other.expect("new_message"))["data"]["text"] == "still works"

        await first.close()
        fourth = await connect()
        assert (await fourth.auth(tokens[JOHN]))["user_id"] == JOHN
        await works(fourth, JOHN)
        assert (await second.expect("new_message"))["data"]["user"]["id"] == JOHN


# --- rate limit -------------------------------------------------------------------------------


async def test_rate_limit_refuses_the_excess_and_keeps_the_connection(
        make_gateway: MakeGateway, tokens: dict[int, str]) -> None:
    gateway = await make_gateway(rate_limit=5, rate_limit_burst=5)
    async with client_factory(gateway.port) as connect:
        client = await connect(tokens[JOHN])
        for ref in range(10):
            await client.send("typing", {"chat_id": GENERAL, "is_typing": True}, ref=ref)
        got = [await client.recv() for _ in range(10)]
        acked = sorted(f["ref"] for f in got if f["event"] == "ack")
        limited = sorted(f["ref"] for f in got if f["event"] == "error"
                         and f["data"]["code"] == "RATE_LIMITED")
        assert len(acked) + len(limited) == 10, got
        # the burst less the auth's token, plus what refilled meanwhile
        assert 4 <= len(acked) <= 5, got
        assert acked == list(range(len(acked))) and limited == list(range(len(acked), 10))

        await asyncio.sleep(1.0)
        await client.send("typing", {"chat_id": GENERAL, "is_typing": False}, ref="later")
        assert (await client.expect("ack"))["ref"] == "later"


# --- the validation cache (backend path) ------------------------------------------------------


async def validations(backend: DevBackend) -> int:
    """Token validations the backend answered so far."""
    return (await backend_calls(backend))["validate"]


async def test_reconnect_with_the_same_token_makes_no_backend_call(
        make_gateway: MakeGateway, backend: DevBackend) -> None:
    gateway = await make_gateway(auth_cache_ttl=60)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        before = await validations(backend)
        first = await connect(token)
        assert await validations(backend) == before + 1
        await first.close()
        again = await connect()
        assert (await again.auth(token))["user_id"] == JOHN  # answered from the cache
        assert await validations(backend) == before + 1
        await works(again, JOHN)
        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_auth_cache_total", result="hit") == 1
        assert metric_value(text, "gogate_auth_cache_total", result="miss") == 1


async def test_without_a_cache_every_auth_asks_the_backend(make_gateway: MakeGateway,
                                                           backend: DevBackend) -> None:
    gateway = await make_gateway(auth_cache_ttl=0)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        before = await validations(backend)
        await connect(token)
        await connect(token)
        assert await validations(backend) == before + 2


async def test_concurrent_auths_with_one_token_make_one_backend_call(
        make_gateway: MakeGateway, backend: DevBackend) -> None:
    gateway = await make_gateway(auth_cache_ttl=60)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        clients = [await connect() for _ in range(8)]
        before = await validations(backend)
        # The backend answers slowly, so that every auth arrives while the first call is out.
        await set_fault(backend, delay=0.5, match="/api/internal/v1/auth/validate")
        await asyncio.gather(*(c.send("auth", {"token": token}) for c in clients))
        answers_ = await asyncio.gather(*(c.expect("auth_success") for c in clients))
        assert {a["data"]["user_id"] for a in answers_} == {JOHN}
        await clear_fault(backend)
        assert await validations(backend) == before + 1


async def test_refusals_are_not_remembered(make_gateway: MakeGateway, backend: DevBackend
                                           ) -> None:
    gateway = await make_gateway(auth_cache_ttl=60)
    expired = await mint(backend, JOHN, -60)
    async with client_factory(gateway.port) as connect:
        client = await connect()
        before = await validations(backend)
        for _ in range(2):
            await client.send("auth", {"token": expired})
            frame = await client.expect_error("AUTH_FAILED")
            assert frame["data"]["message"] == "Authentication failed: Token expired"
        assert await validations(backend) == before + 2  # asked again, not answered from memory
        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_auth_refusals_total", reason="backend") == 2


async def test_a_401_from_a_user_call_forgets_the_token(make_gateway: MakeGateway,
                                                        backend: DevBackend) -> None:
    gateway = await make_gateway(auth_cache_ttl=60)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        client = await connect(token)
        await connect(token)  # from the cache
        before = await validations(backend)
        await set_fault(backend, status=401, match="/api/v1/messages", count=1)
        await client.send("send_message", {"chat_id": GENERAL, "text": "refused"}, ref="m")
        assert (await client.expect_error("AUTH_EXPIRED"))["ref"] == "m"
        later = await connect(token)  # the backend is asked again
        assert await validations(backend) == before + 1
        await works(later, JOHN)


# --- local JWT verification -------------------------------------------------------------------


async def test_dev_backend_tokens_verified_locally_make_no_backend_call(
        make_gateway: MakeGateway, backend: DevBackend) -> None:
    gateway = await make_gateway(jwt_public_key=backend.public_key_path)
    token = await mint(backend, JOHN, 3600)
    async with client_factory(gateway.port) as connect:
        before = await validations(backend)
        client = await connect()
        data = await client.auth(token)
        assert data == {"user_id": JOHN, "name": "John Doe", "phone": None}
        await connect(token)
        assert await validations(backend) == before
        await works(client, JOHN)  # the token still goes to the backend for user calls
        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_auth_local_verifications_total",
                            outcome="accepted") == 2


class Issuer:
    """An RSA key pair of the test's own: the gateway verifies with its public half, the test
    signs whatever claims it likes with the private one."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key_path = str(directory / "jwt-public.pem")
        Path(self.public_key_path).write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def token(self, ttl: float = 3600, algorithm: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"user_id": JOHN, "first_name": "John", "last_name": "Doe",
                                "username": "john@example.com", "roles": ["ROLE_USER"],
                                "iat": now, "exp": now + ttl, "aud": "buzzchat", **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm=algorithm)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_local_jwt_with_audience_accepts_the_issuers_token(
        make_gateway: MakeGateway, backend: DevBackend, issuer: Issuer) -> None:
    gateway = await make_gateway(jwt_public_key=issuer.public_key_path, jwt_audience="buzzchat")
    async with client_factory(gateway.port) as connect:
        before = await validations(backend)
        client = await connect()
        assert (await client.auth(issuer.token(name="Johnny")))["name"] == "Johnny"
        assert await validations(backend) == before


@pytest.mark.parametrize(("kind", "reason"), [
    ("bad signature", "bad signature"),
    ("expired", "token expired"),
    ("nbf", "token not yet valid"),
    ("alg none", "algorithm not accepted"),
    ("wrong audience", "wrong audience"),
    ("no audience", "wrong audience"),
    ("no exp", "token has no exp"),
    ("not a JWT", "not a JWT"),
    ("no user", "token names no user"),
])
async def test_every_local_refusal_over_the_wire(make_gateway: MakeGateway, backend: DevBackend,
                                                 issuer: Issuer, kind: str, reason: str) -> None:
    gateway = await make_gateway(jwt_public_key=issuer.public_key_path, jwt_audience="buzzchat")
    now = int(time.time())
    good = issuer.token()
    header, payload, signature = good.split(".")
    token = {
        "bad signature": f"{header}.{payload}.{signature[:-8]}{'A' * 8}",
        "expired": issuer.token(ttl=-60),
        "nbf": issuer.token(nbf=now + 300),
        "alg none": _unsigned({"user_id": JOHN, "iat": now, "exp": now + 3600,
                               "aud": "buzzchat"}),
        "wrong audience": issuer.token(aud="another-app"),
        "no audience": issuer.token(aud=None),
        "no exp": jwt.encode({"user_id": JOHN, "iat": now, "aud": "buzzchat"}, issuer.key,
                             algorithm="RS256"),
        "not a JWT": "not-a-token",
        "no user": issuer.token(user_id=None, username=None),
    }[kind]
    async with client_factory(gateway.port) as connect:
        before = await validations(backend)
        client = await connect()
        for attempt in range(3):  # each counts as a failed attempt: the third closes
            await client.send("auth", {"token": token}, ref=attempt)
            frame = await client.expect_error("AUTH_FAILED")
            assert frame["ref"] == attempt
            assert frame["data"]["message"] == f"Authentication failed: {reason}"
        assert await client.closed() == 1008
        assert await validations(backend) == before  # never asked
        text = await metrics_text(gateway)
        assert metric_value(text, "gogate_auth_refusals_total", reason=reason) == 3
        assert metric_value(text, "gogate_auth_local_verifications_total", outcome=reason) == 3


async def test_an_unusable_jwt_key_stops_startup_with_exit_2(gateway_process: StartProcess,
                                                             tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-key.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    weak = tmp_path / "weak.pem"
    weak.write_bytes(rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for env, words in (({"JWT_PUBLIC_KEY": str(garbage)}, "JWT_PUBLIC_KEY"),
                       ({"JWT_PUBLIC_KEY": str(weak), "WORKERS": "2"}, "too weak"),
                       ({"JWT_SECRET": "short"}, "too weak")):
        proc = gateway_process(env=env, wait=False)
        assert await asyncio.to_thread(proc.wait, 20) == 2, proc.output()
        assert words in proc.output()
        assert "worker" not in proc.output()  # it stopped before starting any


async def test_dev_mode_verifies_the_dev_backends_tokens_locally(gateway_process: StartProcess
                                                                 ) -> None:
    backend_url = f"http://127.0.0.1:{free_port()}"
    proc = gateway_process(env={"BACKEND_API_URL": backend_url}, args=["--dev"])
    tokens = await wait_for_tokens(proc)
    async with client_factory(proc.port) as connect:
        john = await connect()
        assert (await john.auth(tokens[JOHN]))["name"] == "John Doe"
        await works(john, JOHN)
        status, body, _ = await http_get(f"{backend_url}/api/dev/stats")
        assert status == 200 and json.loads(body)["calls"]["validate"] == 0
        forged = tokens[JOHN].rsplit(".", 1)[0] + "." + "A" * 342
        client = await connect()
        await client.send("auth", {"token": forged})
        frame = await client.expect_error("AUTH_FAILED")
        assert frame["data"]["message"] == "Authentication failed: bad signature"
