"""The gateway's settings: one frozen, typed :class:`Settings`, built once at startup.

Each setting is declared once, as a field of :class:`Settings`: name (the variable in lower
case), type, default, bounds and help (``msgspec.Meta``). The parser of environment, ``.env``
and flag values (:mod:`gogate.configparse`), ``--help``, and the checks of ``.env.example``
and of the README's table all read that declaration through :data:`FIELDS`.

Sources, weakest first: built-in defaults, a ``.env`` file (``KEY=VALUE`` lines; a variable
already set in the environment wins over the file), the environment, command-line flags.
A value that cannot be parsed raises :class:`~gogate.errors.ConfigError` naming the variable and
the value; nothing is silently defaulted.

This is the only module of :mod:`gogate` that reads the environment, including the worker
processes' own variables (:func:`worker_environment`, :func:`worker_from_environment`).
``gogate_fast`` reads ``GOGATE_NO_EXTENSIONS`` itself, because it imports nothing of ``gogate``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gogate.configparse import Field, fields_of, parse_env_file
from gogate.errors import ConfigError

__all__ = ["FIELDS", "Field", "Settings", "given_settings", "load_settings", "parse_env_file",
           "worker_environment", "worker_from_environment"]

# Kinds of value (what Meta.extra may say: gogate.configparse).
Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
TextFile = Annotated[str, Meta(extra={"file": "readable"})]
HttpUrl = Annotated[str, Meta(pattern=r"^https?://[^\s/]+(/\S*)?$", extra={
    "expect": "an http:// or https:// URL", "rstrip": "/"})]
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                  "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the gateway. Names are the environment variables in lower case."""

    host: Annotated[str, Meta(description="listen address for clients")] = "0.0.0.0"
    port: Annotated[Port, Meta(
        description="listen port for clients (/ws, /health, /ready, /)")] = 8080
    internal_host: Annotated[str, Meta(
        description="listen address of the internal API and /metrics")] = "127.0.0.1"
    internal_port: Annotated[Port, Meta(
        description="listen port of the internal API and /metrics")] = 8081
    backend_api_url: Annotated[HttpUrl, Meta(
        description="base URL of the BuzzChat backend")] = "http://localhost:8000"
    internal_api_key: Annotated[str, Meta(extra={"required": True},
        description="key for the backend's internal API and for gogate's own")] = ""
    max_message_size: Annotated[int, Meta(ge=1,
        description="largest inbound WebSocket message, fragments counted whole, bytes")] = 512000
    read_buffer_size: Annotated[int, Meta(ge=256,
        description="initial read buffer per connection (it grows), bytes")] = 1024
    # Above this many unsent bytes, outbound frames wait in the connection's send queue.
    write_buffer_size: Annotated[int, Meta(ge=256,
        description="write-buffer high-water mark per connection, bytes")] = 1024
    # Under PONG_WAIT: the peer hears from us before it gives up on us.
    ping_period: Annotated[Positive, Meta(description="seconds between server pings")] = 54.0
    pong_wait: Annotated[Positive, Meta(
        description="seconds without any inbound frame before the connection is dropped")] = 60.0
    write_wait: Annotated[Positive, Meta(
        description="seconds a blocked write may take before the connection is dropped")] = 10.0
    # Stored as 0 for "auto": the command line resolves it to the CPU count.
    workers: Annotated[int, Meta(ge=0, extra={"auto": 0},
        description="worker processes sharing the port, or 'auto' for one per CPU")] = 1
    auth_timeout: Annotated[Positive, Meta(
        description="seconds a connection has to authenticate (again, once expired)")] = 10.0
    allowed_origins: Annotated[tuple[str, ...], Meta(
        description="comma-separated allowed Origin values, * wildcards, empty = any")] = ()
    max_connections_per_user: Annotated[int, Meta(ge=0,
        description="authenticated connections per user in the deployment, 0 = unlimited")] = 10
    max_connections: Annotated[int, Meta(ge=0,
        description="open connections per worker (then upgrades get 503), 0 = unlimited")] = 0
    send_queue_size: Annotated[int, Meta(ge=1,
        description="messages queued per connection before it counts as a slow consumer")] = 256
    members_cache_ttl: Annotated[NonNegative, Meta(
        description="seconds a chat's member list is reused, 0 = never cached")] = 5.0
    backend_timeout: Annotated[Positive, Meta(description="seconds for one backend call")] = 10.0
    backend_max_connections: Annotated[int, Meta(ge=1,
        description="pooled connections to the backend per worker; calls beyond it wait")] = 100
    rate_limit: Annotated[NonNegative, Meta(
        description="token bucket per connection: events per second, 0 = no limit")] = 20.0
    rate_limit_burst: Annotated[int, Meta(ge=1,
        description="token bucket per connection: most events at once")] = 50
    tls_cert_file: Annotated[TextFile, Meta(
        description="certificate file (PEM) for wss:// and https://")] = ""
    tls_key_file: Annotated[TextFile, Meta(
        description="private key file (PEM) for wss:// and https://")] = ""
    redis_url: Annotated[str, Meta(pattern=r"^((redis|rediss|unix)://\S+)?$",
        extra={"expect": "a redis://, rediss:// or unix:// URL"},
        description="Redis URL for deployments on several hosts; empty = no Redis")] = ""
    shutdown_timeout: Annotated[Positive, Meta(
        description="seconds to drain on SIGTERM/SIGINT")] = 10.0
    log_level: Annotated[str, Meta(description="log level",
        extra={"choices": ("debug", "info", "warning", "error")})] = "info"
    log_format: Annotated[str, Meta(description="log format",
        extra={"choices": ("text", "json")})] = "text"
    # The kernel caps it at net.core.somaxconn; a connect storm needs a deep queue.
    listen_backlog: Annotated[int, Meta(ge=1,
        description="pending-connection queue of the listening socket")] = 4096
    max_connect_rate: Annotated[NonNegative, Meta(
        description="upgrades per second per worker (then 503), 0 = unlimited")] = 0.0
    # Verifying tokens locally spares the backend a call per connect: a key or a secret.
    jwt_public_key: Annotated[str, Meta(extra={"file": "pem"},
        description="PEM public key file (RS*, PS*, ES*, EdDSA) to verify tokens locally")] = ""
    jwt_secret: Annotated[str, Meta(
        description="HMAC secret (HS*) to verify tokens locally")] = ""
    jwt_algorithms: Annotated[tuple[str, ...], Meta(
        extra={"choices": JWT_ALGORITHMS, "empty": "from the key"},
        description="comma-separated accepted token algorithms (never none)")] = ()
    jwt_audience: Annotated[str, Meta(
        description="the aud a token must carry; empty = not checked")] = ""
    jwt_issuer: Annotated[str, Meta(
        description="the iss a token must carry; empty = not checked")] = ""
    auth_cache_ttl: Annotated[NonNegative, Meta(
        description="seconds a token the backend accepted is reused (to its exp), 0 = off")] = 60.0
    # Collecting frames for a while turns many small writes into one system call.
    write_delay: Annotated[NonNegative, Meta(
        description="milliseconds a connection may collect frames into one write")] = 0.0
    # Readiness goes down first, so that load balancers stop sending before the drain starts.
    shutdown_delay: Annotated[NonNegative, Meta(
        description="seconds between SIGTERM and the drain, /ready answering 503 meanwhile")] = 0.0
    trusted_proxies: Annotated[tuple[str, ...], Meta(extra={"network": True},
        description="comma-separated CIDRs whose X-Forwarded-For gives the client address")] = ()
    proxy_protocol: Annotated[bool, Meta(
        description="read a PROXY protocol (v1 or v2) header on the public port")] = False
    recovery_ttl: Annotated[NonNegative, Meta(
        description="seconds a user's stream keeps events for resuming, 0 = recovery off")] = 300.0
    recovery_size: Annotated[int, Meta(ge=1,
        description="events kept per user for resuming")] = 1000
    dev: Annotated[bool, Meta(extra={"variable": False},
        description="development mode: an embedded development backend with demo data")] = False


FIELDS: tuple[Field, ...] = fields_of(Settings)
_FIELDS_BY_NAME = {f.name: f for f in FIELDS}


def load_settings(flags: Mapping[str, str] | None = None, *,
                  environ: Mapping[str, str] | None = None, env_file: Path | None = None,
                  dev: bool = False) -> Settings:
    """Build the settings from the environment, the ``.env`` file and flags (flags win).

    ``flags`` maps setting names (lower case) to raw strings as given on the command line.
    ``env_file`` defaults to ``.env`` in the working directory and is skipped when absent;
    an ``env_file`` given explicitly must exist.
    """
    values: dict[str, Any] = {"dev": dev}
    for name, text in given_settings(flags, environ=environ, env_file=env_file).items():
        field = _FIELDS_BY_NAME[name]
        try:
            values[name] = field.parse(text)
        except ValueError as exc:
            raise ConfigError(f"invalid {field.env}={text!r}: {exc}") from None

    settings = Settings(**values)
    _check(settings)
    return settings


def given_settings(flags: Mapping[str, str] | None = None, *,
                   environ: Mapping[str, str] | None = None,
                   env_file: Path | None = None) -> dict[str, str]:
    """The raw value of every setting that a source gives (the others keep their defaults),
    by setting name; the arguments are those of :func:`load_settings`."""
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
    return raw


def _check(s: Settings) -> None:
    """Rules that involve several settings."""
    for field in FIELDS:
        if field.extra.get("required") and not getattr(s, field.name) and not s.dev:
            raise ConfigError(f"{field.env} is required (or run with --dev)")
    if s.ping_period >= s.pong_wait:
        raise ConfigError(
            f"invalid PING_PERIOD={s.ping_period:g}: must be less than PONG_WAIT={s.pong_wait:g}"
        )
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    # The PROXY header comes before the TLS handshake, which the listener's TLS layer expects
    # first: TLS ends at the proxy then.
    if s.proxy_protocol and s.tls_cert_file:
        raise ConfigError("PROXY_PROTOCOL=true and TLS_CERT_FILE exclude each other: "
                          "terminate TLS at the proxy that sends the PROXY header")
    if s.jwt_public_key and s.jwt_secret:
        raise ConfigError("JWT_PUBLIC_KEY and JWT_SECRET exclude each other: set one of them")
    # A public key used as an HMAC secret would let anyone who has it sign tokens.
    if s.jwt_public_key or s.jwt_secret:
        key = "JWT_SECRET" if s.jwt_secret else "JWT_PUBLIC_KEY"
        wrong = [a for a in s.jwt_algorithms if a.startswith("HS") != bool(s.jwt_secret)]
        if wrong:
            raise ConfigError(f"invalid JWT_ALGORITHMS={','.join(s.jwt_algorithms)!r}: "
                              f"{', '.join(wrong)} cannot be used with {key}")


# The variables through which a supervisor hands a worker process what it needs.
_WORKER_SETTINGS = "GOGATE_WORKER_SETTINGS"
_WORKER_INDEX = "GOGATE_WORKER_INDEX"
_WORKER_BUS = "GOGATE_BUS"


def worker_environment(settings: Settings, index: int, bus_path: str) -> dict[str, str]:
    """The whole environment of worker process ``index``: this process's environment, plus
    the settings (as JSON: the worker does not parse them again), its index and the bus path."""
    return {**os.environ, _WORKER_SETTINGS: msgspec.json.encode(settings).decode(),
            _WORKER_INDEX: str(index), _WORKER_BUS: bus_path}


def worker_from_environment() -> tuple[Settings, int, str]:
    """In a worker process: the settings, index and bus path its supervisor gave it."""
    try:
        settings = msgspec.json.decode(os.environ[_WORKER_SETTINGS], type=Settings)
        return settings, int(os.environ[_WORKER_INDEX]), os.environ[_WORKER_BUS]
    except (KeyError, ValueError, msgspec.ValidationError) as exc:
        raise ConfigError(f"not started as a worker by the gogate supervisor: {exc}") from None
