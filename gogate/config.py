"""The gateway's settings: one frozen, typed :class:`Settings`, built once at startup.

Sources, weakest first: built-in defaults, a ``.env`` file (``KEY=VALUE`` lines; a variable
already set in the environment wins over the file), the environment, command-line flags.
A value that cannot be parsed raises :class:`~gogate.errors.ConfigError` naming the variable and
the value; nothing is silently defaulted. This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from gogate.errors import ConfigError

__all__ = ["FIELDS", "Field", "Settings", "load_settings", "parse_env_file"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the gateway. Names are the environment variables in lower case."""

    # Address the public listener binds (WebSocket /ws, /health, /). Default 0.0.0.0.
    host: str = "0.0.0.0"
    # Port of the public listener. Default 8080.
    port: int = 8080
    # Address of the internal API and /metrics; keep it off the public network. Default loopback.
    internal_host: str = "127.0.0.1"
    # Port of the internal API and /metrics. Default 8081.
    internal_port: int = 8081
    # Base URL of the BuzzChat backend. Default http://localhost:8000.
    backend_api_url: str = "http://localhost:8000"
    # Key sent to the backend's internal API and required by ours. Required outside dev mode.
    internal_api_key: str = ""
    # Largest inbound WebSocket message in bytes, fragments counted whole. Default 512000.
    max_message_size: int = 512000
    # Initial read buffer of a connection in bytes; it grows for larger frames. Default 1024.
    read_buffer_size: int = 1024
    # Write-buffer high-water mark of a connection in bytes: above it, outbound frames wait in
    # the connection's send queue. Default 1024.
    write_buffer_size: int = 1024
    # Seconds between server pings. Default 54 (under PONG_WAIT, as browsers expect).
    ping_period: float = 54.0
    # Seconds without any inbound frame (pong included) before the connection is dropped.
    pong_wait: float = 60.0
    # Seconds a write may stay blocked before the connection is closed as a slow consumer.
    write_wait: float = 10.0
    # Worker processes sharing the port; 0 stands for "auto" (CPU count). Default 1.
    workers: int = 1
    # Seconds a new connection (or one whose token expired) has to authenticate. Default 10.
    auth_timeout: float = 10.0
    # Allowed Origin values, "*" wildcards allowed; empty = any origin. Default empty.
    allowed_origins: tuple[str, ...] = ()
    # Authenticated connections per user across the deployment; 0 = unlimited. Default 10.
    max_connections_per_user: int = 10
    # Open connections per worker; above it the upgrade gets 503; 0 = unlimited. Default 0.
    max_connections: int = 0
    # Messages queued per connection before it counts as a slow consumer. Default 256.
    send_queue_size: int = 256
    # Seconds a chat's member list is reused; 0 = never cached. Default 5.
    members_cache_ttl: float = 5.0
    # Seconds for one backend call. Default 10.
    backend_timeout: float = 10.0
    # Pooled connections to the backend per worker; calls beyond it wait. Default 100.
    backend_max_connections: int = 100
    # Token bucket per connection: refill in events per second; 0 = no limit. Default 20.
    rate_limit: float = 20.0
    # Token bucket per connection: capacity in events. Default 50.
    rate_limit_burst: int = 50
    # Certificate and key for wss:// and https://; both or neither. Default empty.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Redis URL for deployments on several hosts; empty = no Redis. Default empty.
    redis_url: str = ""
    # Seconds to drain on SIGTERM/SIGINT before exiting. Default 10.
    shutdown_timeout: float = 10.0
    # Log level (debug, info, warning, error) and format (text or json).
    log_level: str = "info"
    log_format: str = "text"
    # Development mode: run an embedded development backend with demo data.
    dev: bool = False


# --- parsers: each takes the raw string and returns the typed value or raises ValueError ------


def _number(raw: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(raw.strip()) if kind is float else int(raw.strip(), 10)
    except ValueError:
        raise ValueError("not a number" if kind is float else "not a whole number") from None


def _int(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value: int = _number(raw, int)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _seconds(*, allow_zero: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value: float = _number(raw, float)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError("must be positive" if not allow_zero else "must not be negative")
        return value

    return parse


def _port(raw: str) -> int:
    value: int = _number(raw, int)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


def _text(raw: str) -> str:
    return raw.strip()


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"(redis|rediss|unix)://\S+", value):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


def _workers(raw: str) -> int:
    if raw.strip().lower() == "auto":
        return 0
    return _int(1)(raw)


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    for item in items:
        if any(c.isspace() for c in item):
            raise ValueError("origins are separated by commas and contain no spaces")
    return items


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _file(raw: str) -> str:
    value = raw.strip()
    if value and not Path(value).is_file():
        raise ValueError("no such file")
    return value


class Field(msgspec.Struct, frozen=True):
    """How one setting is read: its variable, parser, and the help text of its flag."""

    name: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("host", _text, "listen address for clients"),
    Field("port", _port, "listen port for clients (/ws, /health, /)"),
    Field("internal_host", _text, "listen address of the internal API and /metrics"),
    Field("internal_port", _port, "listen port of the internal API and /metrics"),
    Field("backend_api_url", _url, "base URL of the BuzzChat backend"),
    Field("internal_api_key", _text, "key for the backend's internal API and gogate's own"),
    Field("max_message_size", _int(1), "largest inbound WebSocket message, bytes"),
    Field("read_buffer_size", _int(256), "initial read buffer per connection, bytes"),
    Field("write_buffer_size", _int(256), "write-buffer high-water mark per connection, bytes"),
    Field("ping_period", _seconds(allow_zero=False), "seconds between server pings"),
    Field("pong_wait", _seconds(allow_zero=False), "seconds without an inbound frame before "
          "the connection is dropped"),
    Field("write_wait", _seconds(allow_zero=False), "seconds a blocked write may take"),
    Field("workers", _workers, "worker processes, or 'auto' for one per CPU"),
    Field("auth_timeout", _seconds(allow_zero=False), "seconds a connection has to authenticate"),
    Field("allowed_origins", _origins, "comma-separated allowed Origin values, '*' wildcards "
          "allowed; empty = any"),
    Field("max_connections_per_user", _int(0), "connections per user, 0 = unlimited"),
    Field("max_connections", _int(0), "open connections per worker, 0 = unlimited"),
    Field("send_queue_size", _int(1), "messages queued per connection before it is closed as "
          "a slow consumer"),
    Field("members_cache_ttl", _seconds(allow_zero=True), "seconds a member list is reused, "
          "0 = never cached"),
    Field("backend_timeout", _seconds(allow_zero=False), "seconds for one backend call"),
    Field("backend_max_connections", _int(1), "pooled connections to the backend"),
    Field("rate_limit", _seconds(allow_zero=True), "events per second per connection, "
          "0 = no limit"),
    Field("rate_limit_burst", _int(1), "burst of events per connection"),
    Field("tls_cert_file", _file, "certificate file for wss:// and https://"),
    Field("tls_key_file", _file, "private key file for wss:// and https://"),
    Field("redis_url", _redis_url, "Redis URL for deployments on several hosts"),
    Field("shutdown_timeout", _seconds(allow_zero=False), "seconds to drain on SIGTERM/SIGINT"),
    Field("log_level", _choice("debug", "info", "warning", "error"), "log level"),
    Field("log_format", _choice("text", "json"), "log format: text or json"),
)

_FIELDS_BY_NAME = {f.name: f for f in FIELDS}

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_env_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines; ``#`` comments, blank lines, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {line.strip()!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def load_settings(
    flags: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    dev: bool = False,
) -> Settings:
    """Build the settings from the environment, the ``.env`` file and flags (flags win).

    ``flags`` maps setting names (lower case) to raw strings as given on the command line.
    ``env_file`` defaults to ``.env`` in the working directory and is skipped when absent;
    an ``env_file`` given explicitly must exist.
    """
    environ = os.environ if environ is None else environ
    if env_file is None:
        default = Path(".env")
        file_values = parse_env_file(default) if default.is_file() else {}
    else:
        if not env_file.is_file():
            raise ConfigError(f"env file not found: {env_file}")
        file_values = parse_env_file(env_file)

    raw: dict[str, str] = {}
    for field in FIELDS:
        if field.env in environ:
            raw[field.name] = environ[field.env]
        elif field.env in file_values:
            raw[field.name] = file_values[field.env]
    for name, value in (flags or {}).items():
        if name not in _FIELDS_BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        raw[name] = value

    values: dict[str, Any] = {"dev": dev}
    for name, text in raw.items():
        field = _FIELDS_BY_NAME[name]
        try:
            values[name] = field.parse(text)
        except ValueError as exc:
            raise ConfigError(f"invalid {field.env}={text!r}: {exc}") from None

    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    """Rules that involve several settings."""
    if not s.internal_api_key and not s.dev:
        raise ConfigError("INTERNAL_API_KEY is required (or run with --dev)")
    if s.ping_period >= s.pong_wait:
        raise ConfigError(
            f"invalid PING_PERIOD={s.ping_period:g}: must be less than PONG_WAIT={s.pong_wait:g}"
        )
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    if s.rate_limit > 0 and s.rate_limit_burst < 1:
        raise ConfigError("invalid RATE_LIMIT_BURST: must be at least 1")
