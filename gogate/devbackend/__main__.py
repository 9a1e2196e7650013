"""Run the development backend: ``python -m gogate.devbackend [--port 8000] ...``.

Prints the URL and a token per demo user on stdout, then serves until SIGINT or SIGTERM.
For development and tests only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .app import DevBackend
from .demo import DEMO_USERS

log = logging.getLogger("gogate.devbackend")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gogate.devbackend",
        description="BuzzChat development backend (SQLite; for development and tests only).")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000,
                        help="listen port, 0 = any free one (default %(default)s)")
    parser.add_argument("--db", metavar="PATH", default=None,
                        help="SQLite file (default: a fresh temporary file)")
    parser.add_argument("--internal-api-key", default="dev-internal-key",
                        help="key the internal API expects in X-Internal-API-Key"
                             " (default %(default)s)")
    parser.add_argument("--token-ttl", type=float, default=86400.0, metavar="SECONDS",
                        help="lifetime of the printed demo tokens (default %(default)s)")
    parser.add_argument("--public-key-out", metavar="PATH", default=None,
                        help="write the PEM of the key that verifies the tokens to PATH, for the"
                             " gateway's JWT_PUBLIC_KEY (it is also served at"
                             " GET /api/dev/public-key)")
    parser.add_argument("--legacy-shapes", action="store_true",
                        help="answer in the shapes the original Go gateway reads and sends"
                             " (user_id and name, camelCase message bodies)")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    backend = DevBackend(args.host, args.port, args.db, internal_api_key=args.internal_api_key,
                         token_ttl=args.token_ttl, access_log=args.access_log,
                         legacy_shapes=args.legacy_shapes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if args.public_key_out is not None:
            with open(args.public_key_out, "w", encoding="ascii") as file:
                file.write(backend.public_key)
        url = await backend.start()
        names = {user_id: f"{first} {last}" for user_id, first, last, *_ in DEMO_USERS}
        lines = [f"listening on {url}"]
        lines += [f"user {i} {names[i]}: {token}" for i, token in backend.tokens().items()]
        print("\n".join(lines), flush=True)
        log.warning("development backend: for development only, never expose it")
        await stop.wait()
        log.info("stopping")
    finally:
        await backend.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        if exc.filename is not None:  # the public key file
            problem = f"cannot write {exc.filename}: {exc.strerror}"
        else:
            problem = f"cannot listen on {args.host}:{args.port}: {exc}"
        print(f"gogate.devbackend: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
