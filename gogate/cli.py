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
from collections.abc import Sequence
from pathlib import Path

import msgspec

from gogate import __version__
from gogate.config import FIELDS, Settings, load_settings
from gogate.errors import ConfigError
from gogate.log import configure, server_log

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
    except ConfigError as exc:
        print(f"gogate: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    runner = _run_dev(settings) if settings.dev else _run(settings)
    try:
        import uvloop

        return uvloop.run(runner)
    except KeyboardInterrupt:
        return 0


def _worker_count(settings: Settings) -> int:
    return settings.workers or os.cpu_count() or 1


async def _serve(settings: Settings) -> int:
    """One worker in this process, or a supervisor of several."""
    count = _worker_count(settings)
    if count == 1 and not settings.redis_url:
        from gogate.hub import LocalBroker
        from gogate.server import run

        return await run(settings, LocalBroker())
    from gogate.cluster.supervisor import run as supervise

    return await supervise(settings, count)


async def _run(settings: Settings) -> int:
    return await _serve(settings)


async def _run_dev(settings: Settings) -> int:
    """The gateway and the development backend in one process, with demo data."""
    from urllib.parse import urlsplit

    from gogate.devbackend import DevBackend

    url = urlsplit(settings.backend_api_url)
    key = settings.internal_api_key or DEV_INTERNAL_API_KEY
    backend = DevBackend(host=url.hostname or "127.0.0.1", port=url.port or 8000,
                         internal_api_key=key)
    try:
        base_url = await backend.start()
    except OSError as exc:
        server_log.error("cannot start the development backend on %s: %s",
                         settings.backend_api_url, exc.strerror or exc)
        return 1
    settings = msgspec.structs.replace(settings, backend_api_url=base_url, internal_api_key=key)
    _print_banner(settings, base_url, backend.tokens())
    try:
        return await _serve(settings)
    finally:
        try:  # requests still held by a slow backend do not hold up the exit
            await asyncio.wait_for(backend.stop(), timeout=1.0)
        except TimeoutError:
            server_log.warning("development backend stopped with requests in flight")


def _print_banner(settings: Settings, backend_url: str, tokens: dict[int, str]) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    ws_url = f"ws://{host}:{settings.port}/ws"
    lines = [
        "",
        "gogate development mode",
        f"  gateway:      {ws_url}   (health: http://{host}:{settings.port}/health)",
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
