"""Settings: defaults of the documented table, precedence of the sources, ``.env`` parsing,
refused values, and the variables that hand a worker process its settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gogate.config import (
    FIELDS,
    Settings,
    load_settings,
    parse_env_file,
    worker_environment,
    worker_from_environment,
)
from gogate.errors import ConfigError

# The documented table of variables, written out.
CONTRACT_DEFAULTS: dict[str, Any] = {
    "HOST": "0.0.0.0",
    "PORT": 8080,
    "INTERNAL_HOST": "127.0.0.1",
    "INTERNAL_PORT": 8081,
    "BACKEND_API_URL": "http://localhost:8000",
    "INTERNAL_API_KEY": "",  # required: no usable default
    "MAX_MESSAGE_SIZE": 512000,
    "READ_BUFFER_SIZE": 1024,
    "WRITE_BUFFER_SIZE": 1024,
    "PING_PERIOD": 54,
    "PONG_WAIT": 60,
    "WRITE_WAIT": 10,
    "WORKERS": 1,
    "AUTH_TIMEOUT": 10,
    "ALLOWED_ORIGINS": (),
    "MAX_CONNECTIONS_PER_USER": 10,
    "MAX_CONNECTIONS": 0,
    "SEND_QUEUE_SIZE": 256,
    "MEMBERS_CACHE_TTL": 5,
    "BACKEND_TIMEOUT": 10,
    "BACKEND_MAX_CONNECTIONS": 100,
    "RATE_LIMIT": 20,
    "RATE_LIMIT_BURST": 50,
    "TLS_CERT_FILE": "",
    "TLS_KEY_FILE": "",
    "REDIS_URL": "",
    "SHUTDOWN_TIMEOUT": 10,
    "LOG_LEVEL": "info",
    "LOG_FORMAT": "text",
    "LISTEN_BACKLOG": 4096,
    "MAX_CONNECT_RATE": 0,
    "JWT_PUBLIC_KEY": "",
    "JWT_SECRET": "",
    "JWT_ALGORITHMS": (),  # derived from the key when empty
    "JWT_AUDIENCE": "",
    "JWT_ISSUER": "",
    "AUTH_CACHE_TTL": 60,
    "WRITE_DELAY": 0,
    "SHUTDOWN_DELAY": 0,
    "TRUSTED_PROXIES": (),
    "PROXY_PROTOCOL": False,
    "RECOVERY_TTL": 300,
    "RECOVERY_SIZE": 1000,
}

KEY = {"INTERNAL_API_KEY": "k"}


def load(environ: dict[str, str] | None = None, flags: dict[str, str] | None = None,
         env_file: Path | None = None, *, tmp: Path, dev: bool = False) -> Settings:
    """Load with an explicit environment and an explicit (empty unless given) env file."""
    if env_file is None:
        env_file = tmp / "empty.env"
        env_file.write_text("")
    return load_settings(flags, environ=environ or {}, env_file=env_file, dev=dev)


def write_env(tmp: Path, text: str, name: str = "custom.env") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


# --- defaults ------------------------------------------------------------------------------


def test_settings_fields_are_exactly_the_contract_variables() -> None:
    names = {f.upper() for f in Settings.__struct_fields__} - {"DEV"}
    assert names == set(CONTRACT_DEFAULTS)
    assert {f.env for f in FIELDS} == set(CONTRACT_DEFAULTS)


@pytest.mark.parametrize("variable", sorted(CONTRACT_DEFAULTS))
def test_default_equals_contract(variable: str) -> None:
    value = getattr(Settings(), variable.lower())
    expected = CONTRACT_DEFAULTS[variable]
    assert value == expected
    # numbers of the table may be floats in Settings (seconds); the kind must otherwise match
    assert type(value) is type(expected) or (type(expected) is int and type(value) is float)


def test_load_with_nothing_set_gives_the_defaults(tmp_path: Path) -> None:
    settings = load(KEY, tmp=tmp_path)
    assert settings == msgspec.structs.replace(Settings(), internal_api_key="k")
    assert settings.workers == 1
    assert settings.allowed_origins == ()


# --- precedence ----------------------------------------------------------------------------


def test_env_file_value_used_when_environment_lacks_it(tmp_path: Path) -> None:
    env_file = write_env(tmp_path, "PORT=9001\nINTERNAL_API_KEY=from-file\n")
    settings = load({}, env_file=env_file, tmp=tmp_path)
    assert settings.port == 9001
    assert settings.internal_api_key == "from-file"


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path, "PORT=9001\nHOST=10.0.0.1\n")
    settings = load({"PORT": "9002", **KEY}, env_file=env_file, tmp=tmp_path)
    assert settings.port == 9002
    assert settings.host == "10.0.0.1"


def test_flags_win_over_environment_and_env_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path, "PORT=9001\nWORKERS=3\n")
    settings = load({"PORT": "9002", **KEY}, {"port": "9003"}, env_file=env_file, tmp=tmp_path)
    assert settings.port == 9003
    assert settings.workers == 3


def test_default_env_file_is_dot_env_in_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PORT=9004\nINTERNAL_API_KEY=dotenv\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.port == 9004
    assert settings.internal_api_key == "dotenv"


def test_missing_default_env_file_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ=KEY).port == 8080


def test_explicit_env_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.env"):
        load_settings(environ=KEY, env_file=tmp_path / "nope.env")


# --- .env parsing --------------------------------------------------------------------------


def test_env_file_syntax(tmp_path: Path) -> None:
    path = write_env(tmp_path, "\n".join([
        "# a comment",
        "   # an indented comment",
        "",
        "   ",
        "export HOST=10.1.2.3",
        'BACKEND_API_URL="http://backend:9000"',
        "LOG_LEVEL='debug'",
        "  PORT = 7000  ",
        "REDIS_URL=",
        "ALLOWED_ORIGINS=https://a.example.com # trailing comment",
    ]) + "\n")
    assert parse_env_file(path) == {
        "HOST": "10.1.2.3",
        "BACKEND_API_URL": "http://backend:9000",
        "LOG_LEVEL": "debug",
        "PORT": "7000",
        "REDIS_URL": "",
        "ALLOWED_ORIGINS": "https://a.example.com",
    }
    settings = load(KEY, env_file=path, tmp=tmp_path)
    assert settings.host == "10.1.2.3"
    assert settings.backend_api_url == "http://backend:9000"
    assert settings.log_level == "debug"
    assert settings.port == 7000
    assert settings.allowed_origins == ("https://a.example.com",)


def test_quoted_value_keeps_hash(tmp_path: Path) -> None:
    path = write_env(tmp_path, 'INTERNAL_API_KEY="abc #def"\n')
    assert parse_env_file(path) == {"INTERNAL_API_KEY": "abc #def"}


@pytest.mark.parametrize("bad_line", ["this is not an assignment", "1PORT=8080", "=8080"])
def test_malformed_env_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    path = write_env(tmp_path, f"# header\nPORT=8080\n\n{bad_line}\n")
    with pytest.raises(ConfigError) as info:
        load(KEY, env_file=path, tmp=tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert ":4" in message


# --- refused values ------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("PORT", "-1"),
    ("PING_PERIOD", "-1"),
    ("PING_PERIOD", "0"),
    ("PING_PERIOD", "nan"),
    ("RATE_LIMIT", "x"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "loud"),
    ("WORKERS", "0"),
    ("WORKERS", "two"),
    ("BACKEND_API_URL", "ftp://x"),
    ("MAX_MESSAGE_SIZE", "0"),
    ("SEND_QUEUE_SIZE", "1.5"),
    ("REDIS_URL", "http://redis"),
    ("LISTEN_BACKLOG", "0"),
    ("LISTEN_BACKLOG", "many"),
    ("MAX_CONNECT_RATE", "-1"),
    ("MAX_CONNECT_RATE", "inf"),
    ("AUTH_CACHE_TTL", "-5"),
    ("WRITE_DELAY", "-0.5"),
    ("WRITE_DELAY", "soon"),
    ("JWT_ALGORITHMS", "none"),
    ("JWT_ALGORITHMS", "RS256,None"),
    ("JWT_ALGORITHMS", "RS999"),
    ("JWT_PUBLIC_KEY", "/nonexistent/key.pem"),
    ("SHUTDOWN_DELAY", "-1"),
    ("SHUTDOWN_DELAY", "later"),
    ("TRUSTED_PROXIES", "10.0.0.0/33"),
    ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.example.com"),
    ("TRUSTED_PROXIES", "fe80::/129"),
    ("PROXY_PROTOCOL", "maybe"),
    ("RECOVERY_TTL", "-1"),
    ("RECOVERY_SIZE", "0"),
    ("RECOVERY_SIZE", "1.5"),
])
def test_bad_value_names_variable_and_value(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({variable: value, **KEY}, tmp=tmp_path)
    message = str(info.value)
    assert variable in message
    assert value in message
    assert "\n" not in message


def test_bad_value_in_env_file_is_refused_too(tmp_path: Path) -> None:
    path = write_env(tmp_path, "PORT=abc\n")
    with pytest.raises(ConfigError, match=r"PORT.*abc"):
        load(KEY, env_file=path, tmp=tmp_path)


def test_bad_flag_value_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PORT.*abc"):
        load(KEY, {"port": "abc"}, tmp=tmp_path)


def test_unknown_flag_name_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nonsense"):
        load(KEY, {"nonsense": "1"}, tmp=tmp_path)


@pytest.mark.parametrize(("raw", "expected"), [("auto", 0), ("AUTO", 0), ("4", 4)])
def test_workers(tmp_path: Path, raw: str, expected: int) -> None:
    assert load({"WORKERS": raw, **KEY}, tmp=tmp_path).workers == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("", ()),
    ("https://a.com", ("https://a.com",)),
    ("https://a.com,https://*.b.com", ("https://a.com", "https://*.b.com")),
    (" https://a.com , https://b.com ,", ("https://a.com", "https://b.com")),
])
def test_allowed_origins_comma_separated(tmp_path: Path, raw: str,
                                         expected: tuple[str, ...]) -> None:
    assert load({"ALLOWED_ORIGINS": raw, **KEY}, tmp=tmp_path).allowed_origins == expected


def test_numbers_parse_to_their_types(tmp_path: Path) -> None:
    settings = load({"PING_PERIOD": "1.5", "PONG_WAIT": "3", "MEMBERS_CACHE_TTL": "0",
                     "RATE_LIMIT": "0", "MAX_CONNECTIONS": "0", **KEY}, tmp=tmp_path)
    assert settings.ping_period == 1.5
    assert settings.pong_wait == 3.0
    assert settings.members_cache_ttl == 0
    assert settings.rate_limit == 0
    assert settings.max_connections == 0


def test_internal_api_key_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="INTERNAL_API_KEY"):
        load({}, tmp=tmp_path)
    with pytest.raises(ConfigError, match="INTERNAL_API_KEY"):
        load({"INTERNAL_API_KEY": ""}, tmp=tmp_path)


def test_internal_api_key_not_required_in_dev_mode(tmp_path: Path) -> None:
    settings = load({}, tmp=tmp_path, dev=True)
    assert settings.dev is True


@pytest.mark.parametrize(("ping", "pong"), [("60", "60"), ("61", "60"), ("10", "5")])
def test_ping_period_must_be_below_pong_wait(tmp_path: Path, ping: str, pong: str) -> None:
    with pytest.raises(ConfigError, match="PING_PERIOD"):
        load({"PING_PERIOD": ping, "PONG_WAIT": pong, **KEY}, tmp=tmp_path)


def test_tls_cert_without_key_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="TLS"):
        load({"TLS_CERT_FILE": str(cert), **KEY}, tmp=tmp_path)
    with pytest.raises(ConfigError, match="TLS"):
        load({"TLS_KEY_FILE": str(cert), **KEY}, tmp=tmp_path)


def test_tls_cert_and_key_accepted(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("y")
    settings = load({"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), **KEY}, tmp=tmp_path)
    assert (settings.tls_cert_file, settings.tls_key_file) == (str(cert), str(key))


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


# --- local token verification --------------------------------------------------------------


@pytest.fixture
def public_key(tmp_path: Path) -> Path:
    """A real Ed25519 public key in PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    return path


def test_jwt_settings_accepted(tmp_path: Path, public_key: Path) -> None:
    settings = load({"JWT_PUBLIC_KEY": str(public_key), "JWT_ALGORITHMS": " eddsa , es256 ,",
                     "JWT_AUDIENCE": "buzzchat", "JWT_ISSUER": "https://auth.example.com",
                     **KEY}, tmp=tmp_path)
    assert settings.jwt_public_key == str(public_key)
    assert settings.jwt_algorithms == ("EdDSA", "ES256")
    assert (settings.jwt_audience, settings.jwt_issuer) == ("buzzchat",
                                                            "https://auth.example.com")
    secret = load({"JWT_SECRET": "s3cret-of-at-least-32-bytes-length!", **KEY}, tmp=tmp_path)
    assert secret.jwt_secret == "s3cret-of-at-least-32-bytes-length!"
    assert secret.jwt_algorithms == ()


def test_jwt_public_key_must_be_a_pem_file(tmp_path: Path) -> None:
    not_pem = write_env(tmp_path, "just some text\n", name="key.txt")
    with pytest.raises(ConfigError, match=r"JWT_PUBLIC_KEY.*key\.txt.*PEM"):
        load({"JWT_PUBLIC_KEY": str(not_pem), **KEY}, tmp=tmp_path)
    with pytest.raises(ConfigError, match=r"JWT_PUBLIC_KEY.*no such file"):
        load({"JWT_PUBLIC_KEY": str(tmp_path), **KEY}, tmp=tmp_path)


def test_jwt_public_key_and_secret_exclude_each_other(tmp_path: Path, public_key: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load({"JWT_PUBLIC_KEY": str(public_key), "JWT_SECRET": "s", **KEY}, tmp=tmp_path)
    assert "JWT_PUBLIC_KEY" in str(info.value) and "JWT_SECRET" in str(info.value)


def test_jwt_algorithms_must_fit_the_key(tmp_path: Path, public_key: Path) -> None:
    with pytest.raises(ConfigError, match=r"JWT_ALGORITHMS.*HS256.*JWT_PUBLIC_KEY"):
        load({"JWT_PUBLIC_KEY": str(public_key), "JWT_ALGORITHMS": "RS256,HS256", **KEY},
             tmp=tmp_path)
    with pytest.raises(ConfigError, match=r"JWT_ALGORITHMS.*RS256.*JWT_SECRET"):
        load({"JWT_SECRET": "s", "JWT_ALGORITHMS": "HS256,RS256", **KEY}, tmp=tmp_path)


def test_connect_storm_and_write_settings(tmp_path: Path) -> None:
    settings = load({"LISTEN_BACKLOG": "65535", "MAX_CONNECT_RATE": "250.5",
                     "AUTH_CACHE_TTL": "0", "WRITE_DELAY": "2", **KEY}, tmp=tmp_path)
    assert settings.listen_backlog == 65535
    assert settings.max_connect_rate == 250.5
    assert settings.auth_cache_ttl == 0
    assert settings.write_delay == 2.0


def test_operations_and_recovery_settings(tmp_path: Path) -> None:
    settings = load({"SHUTDOWN_DELAY": "2.5", "TRUSTED_PROXIES": " 10.1.2.3/8 , ::1,192.0.2.7",
                     "PROXY_PROTOCOL": "TRUE", "RECOVERY_TTL": "0", "RECOVERY_SIZE": "5",
                     **KEY}, tmp=tmp_path)
    assert settings.shutdown_delay == 2.5
    # host bits dropped, a bare address is a network of one
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1/128", "192.0.2.7/32")
    assert settings.proxy_protocol is True
    assert (settings.recovery_ttl, settings.recovery_size) == (0, 5)


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("1", True), ("yes", True), ("On", True),
    ("false", False), ("0", False), ("no", False), ("OFF", False),
])
def test_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    assert load({"PROXY_PROTOCOL": raw, **KEY}, tmp=tmp_path).proxy_protocol is expected


# --- worker processes ----------------------------------------------------------------------


def test_worker_receives_the_supervisors_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load({"WORKERS": "auto", "ALLOWED_ORIGINS": "https://a.com", "PORT": "9100",
                     **KEY}, tmp=tmp_path)
    env = worker_environment(settings, 3, "/run/gogate/bus.sock")
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment stays
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert worker_from_environment() == (settings, 3, "/run/gogate/bus.sock")


def test_worker_outside_a_supervisor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOGATE_WORKER_SETTINGS", raising=False)
    with pytest.raises(ConfigError, match="supervisor"):
        worker_from_environment()
