"""Container health check: exit 0 when this container's gateway answers ``GET /health``.

The image runs it as its ``HEALTHCHECK`` (no curl needed). It reads the listener from the same
variables as the gateway: ``PORT``, ``HOST`` (an any-address means the loopback) and
``TLS_CERT_FILE`` (then it asks over HTTPS; the certificate names the public host, not the
loopback, so it is not verified here). A worker that is draining still answers, so a draining
container stays healthy until it exits; readiness for new clients is ``/ready``.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

ANY_ADDRESS = {"", "0.0.0.0", "::"}


def health_url(environ: dict[str, str]) -> str:
    host = environ.get("HOST", "")
    host = "127.0.0.1" if host in ANY_ADDRESS else host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    scheme = "https" if environ.get("TLS_CERT_FILE") else "http"
    return f"{scheme}://{host}:{environ.get('PORT', '8080')}/health"


def main() -> int:
    url = health_url(dict(os.environ))
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            body = response.read(512).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
