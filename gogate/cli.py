"""Command line: ``python -m gogate [--dev] [--env-file F] [--port N] ...``.

Every setting of :mod:`gogate.config` has a flag of the same name (``--max-message-size``);
flags win over the environment and ``.env``. An invalid value exits with code 2 and one line
naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from gogate import __version__
from gogate.config import FIELDS, Settings, given_settings, load_settings
from gogate.errors import ConfigError
from gogate.log import configure, server_log

if TYPE_CHECKING:
    from gogate.server import Pages

__all__ = ["build_parser", "main", "version_line"]

DEV_INTERNAL_API_KEY = "dev-internal-key"


_SOURCES = """\
Every setting is read from, in this order, each source overriding the one before:
  1. its built-in default;
  2. a .env file in the working directory (or the file given with --env-file), with
     NAME=value lines; a variable already set in the environment wins over the file;
  3. the environment variable NAME;
  4. the flag --name (lower case, dashes for underscores).
INTERNAL_API_KEY is required, except with --dev. A value that cannot be used stops
startup with one line naming the variable and the value, and exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The flags: --dev, --env-file, and one per setting, with its variable and default."""
    parser = argparse.ArgumentParser(
        prog="python -m gogate", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [-h] [--version] [--dev] [--env-file PATH] [--<setting> VALUE ...]",
        description="gogate: the BuzzChat WebSocket gateway.\n\n" + _SOURCES,
    )
    parser.add_argument("--dev", action="store_true",
                        help="development mode: also run an embedded development backend with "
                             "demo users and chats, and print demo tokens")
    parser.add_argument("--env-file", type=Path, default=None, metavar="PATH",
                        help="read settings from this file instead of ./.env")
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the version and the hot-path implementation, then exit")
    settings = parser.add_argument_group(
        "settings", "each flag, its environment variable, meaning and default")
    for field in FIELDS:
        choices = field.extra.get("choices")
        meaning = f"{field.help}: {', '.join(choices)}" if choices else field.help
        settings.add_argument(field.flag, dest=field.name, default=None, metavar=field.env,
                              help=f"{meaning} (variable {field.env}, "
                                   f"default: {field.shown_default})")
    return parser


def version_line() -> str:
    """``gogate 0.1.0 (compiled hot path, CPython 3.11.7)``: what runs, as bug reports need it."""
    import platform

    from gogate_fast import IMPLEMENTATION

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"gogate {__version__} ({IMPLEMENTATION} hot path, {python})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {f.name: getattr(args, f.name) for f in FIELDS if getattr(args, f.name) is not None}
    try:
        settings = load_settings(flags, env_file=args.env_file, dev=args.dev)
        if not settings.dev or settings.jwt_public_key or settings.jwt_secret:
            _check_verifier(settings)  # --dev without a key: checked with the dev backend's
    except ConfigError as exc:
        print(f"gogate: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    if settings.dev:
        runner = _run_dev(settings, given_settings(flags, env_file=args.env_file))
    else:
        runner = _run(settings)
    try:
        import uvloop

        return uvloop.run(runner)
    except KeyboardInterrupt:
        return 0


def _check_verifier(settings: Settings) -> None:
    """Raise ConfigError now, before any worker starts, when ``JWT_*`` cannot verify tokens
    (an unreadable or weak key, an algorithm of another kind); every worker would else die
    at start, again and again."""
    from gogate.auth import build_verifier

    build_verifier(settings.jwt_public_key, settings.jwt_secret, settings.jwt_algorithms,
                   audience=settings.jwt_audience, issuer=settings.jwt_issuer)


def _verify_dev_tokens(settings: Settings, public_key_path: str) -> Settings:
    """Development mode verifies tokens locally with the development backend's RS256 key, as
    ``JWT_PUBLIC_KEY`` does in production, unless ``JWT_PUBLIC_KEY`` or ``JWT_SECRET`` names
    another key. ``JWT_ALGORITHMS``, ``JWT_AUDIENCE`` and ``JWT_ISSUER`` still apply."""
    if not (settings.jwt_public_key or settings.jwt_secret):
        settings = msgspec.structs.replace(settings, jwt_public_key=public_key_path)
    _check_verifier(settings)
    return settings


def _worker_count(settings: Settings) -> int:
    return settings.workers or os.cpu_count() or 1


async def _serve(settings: Settings, pages: Pages | None = None) -> int:
    """One worker in this process, or a supervisor of several. ``pages`` (the demo page) is
    served by a lone worker only."""
    count = _worker_count(settings)
    if count == 1 and not settings.redis_url:
        from gogate.hub import LocalBroker
        from gogate.server import run

        return await run(settings, LocalBroker(settings.recovery_ttl, settings.recovery_size),
                         pages=pages)
    if pages is not None:
        server_log.warning("the demo page is served by a lone gateway only "
                           "(WORKERS=1 and no REDIS_URL): /demo answers 404")
    from gogate.cluster.supervisor import run as supervise

    return await supervise(settings, count)


async def _run(settings: Settings) -> int:
    return await _serve(settings)


async def _run_dev(settings: Settings, given: Collection[str]) -> int:
    """The gateway and the development backend in one process, with demo data.

    Nothing comes from fixed ports: the backend listens on a free loopback port unless
    ``BACKEND_API_URL`` is given, and the internal port is ``PORT`` + 1 when that is free
    (else any free port) unless ``INTERNAL_PORT`` is given. The ports given are checked
    before anything starts, so that a taken one stops the start with one line and nothing
    left behind; the banner comes once the gateway answers ``/ready``."""
    from urllib.parse import urlsplit

    from gogate.devbackend import DevBackend
    from gogate.devbackend.demo_pages import DemoPages

    try:
        settings = _dev_ports(settings, given)
    except OSError as exc:
        print(f"gogate: {exc}", file=sys.stderr)
        return 1
    url = urlsplit(settings.backend_api_url)
    host, port = ((url.hostname or "localhost", url.port or 80) if "backend_api_url" in given
                  else ("127.0.0.1", 0))
    key = settings.internal_api_key or DEV_INTERNAL_API_KEY
    backend = DevBackend(host=host, port=port, internal_api_key=key)
    try:
        base_url = await backend.start()
    except OSError as exc:
        await backend.stop()  # its temporary directory (database, key) goes with it
        print(f"gogate: cannot start the development backend on {settings.backend_api_url}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    settings = msgspec.structs.replace(settings, backend_api_url=base_url, internal_api_key=key)
    try:
        settings = _verify_dev_tokens(settings, backend.public_key_path)
    except ConfigError as exc:
        print(f"gogate: {exc}", file=sys.stderr)
        await backend.stop()
        return 2
    pages = DemoPages(backend.store)
    try:
        serving = asyncio.ensure_future(_serve(settings, pages))
        if await _answers(settings, serving):
            _print_banner(settings, base_url, backend.tokens())
        return await serving
    finally:
        pages.close()
        try:  # requests still held by a slow backend do not hold up the exit
            await asyncio.wait_for(backend.stop(), timeout=1.0)
        except TimeoutError:
            server_log.warning("development backend stopped with requests in flight")


def _dev_ports(settings: Settings, given: Collection[str]) -> Settings:
    """``PORT`` and ``INTERNAL_PORT`` checked when given, chosen when not (raises OSError with
    one line naming the port that is taken)."""
    from gogate.devports import check_free, free_port

    def check(variable: str, host: str, port: int) -> None:
        try:
            check_free(host, port)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} ({variable}): "
                          f"{exc.strerror or exc}") from None

    port, internal = settings.port, settings.internal_port
    if port:
        check("PORT", settings.host, port)
    else:
        port = free_port(settings.host)
    if "internal_port" in given and internal:
        check("INTERNAL_PORT", settings.internal_host, internal)
    else:
        internal = free_port(settings.internal_host, port + 1)
    return msgspec.structs.replace(settings, port=port, internal_port=internal)


async def _answers(settings: Settings, serving: asyncio.Future[int]) -> bool:
    """Whether the gateway answers ``/ready`` before it stops (a bind that failed)."""
    from gogate.devports import loopback, wait_ready

    ready = asyncio.ensure_future(wait_ready(
        loopback(settings.host), settings.port, tls=bool(settings.tls_cert_file),
        proxy_protocol=settings.proxy_protocol, timeout=60.0))
    await asyncio.wait((ready, serving), return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        return False
    if not ready.result():
        server_log.warning("the gateway did not answer /ready within 60 s")
    return ready.result()


def _print_banner(settings: Settings, backend_url: str, tokens: dict[int, str]) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    ws_url = f"ws://{host}:{settings.port}/ws"
    lines = [
        "",
        "gogate development mode",
        f"  gateway:      {ws_url}   (health: http://{host}:{settings.port}/health)",
        f"  demo page:    http://{host}:{settings.port}/demo   (open it in two tabs)",
        f"  metrics:      http://{settings.internal_host}:{settings.internal_port}/metrics",
        f"  dev backend:  {backend_url}   (demo data; for development only)",
        "",
        "Demo users (John, Jane and Carol share chat 1 \"General\"; Dave is not in it):",
    ]
    names = {1: "John Doe", 2: "Jane Smith", 3: "Carol White", 4: "Dave Black"}
    for user_id, token in sorted(tokens.items()):
        lines.append(f"  user {user_id} {names.get(user_id, '')}: {token}")
    first = tokens.get(1, next(iter(tokens.values()), ""))
    lines += [
        "",
        "Try it: connect, then paste the events line by line:",
        f"  .venv/bin/python -m websockets {ws_url}",
        f'  {{"event":"auth","data":{{"token":"{first}"}}}}',
        '  {"event":"send_message","data":{"chat_id":1,"text":"Hello!"},"ref":1}',
        "",
    ]
    print("\n".join(lines), flush=True)
