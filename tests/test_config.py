"""Settings: defaults of the contract's table, precedence of the sources, ``.env`` parsing,
refused values, and the command line as a process (CONTRACT.md section 1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gogate.config import FIELDS, Settings, load_settings, parse_env_file
from gogate.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# CONTRACT.md section 1, the table of variables, written out.
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


# --- the command line as a process ---------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without any gogate variable, plus ``extra``."""
    names = {f.env for f in FIELDS}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gogate", *args], cwd=tmp, env=cli_env(**env),
                          capture_output=True, text=True, timeout=30)


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_cli_bad_env_value_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, PORT="abc", INTERNAL_API_KEY="k")
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "abc" in lines[0]


def test_cli_bad_flag_value_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--port", "abc", INTERNAL_API_KEY="k")
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "abc" in lines[0]


def test_cli_missing_internal_api_key_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path)
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "INTERNAL_API_KEY" in lines[0]


def test_cli_help_lists_every_setting(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    expected = [f"--{f.name.replace('_', '-')}" for f in FIELDS] + ["--dev", "--env-file"]
    for flag in expected:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout), flag
