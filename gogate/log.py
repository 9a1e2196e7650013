"""Logging: named loggers, a text and a JSON formatter, and per-connection context.

Loggers: ``gogate.server`` (startup, shutdown, the periodic summary of connections),
``gogate.conn`` (connect, auth, close, disconnect: DEBUG only, see :mod:`gogate.lifecycle`),
``gogate.hub`` (broadcast faults), ``gogate.backend`` (backend calls), ``gogate.internal``.
Per-connection and per-message logging is off unless the level is ``debug``. Tokens and keys
are never logged: no log call passes them, and :func:`redact` scrubs anything that looks like a
bearer token.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "backend_log",
    "configure",
    "conn_log",
    "hub_log",
    "internal_log",
    "redact",
    "server_log",
    "timestamp",
]

server_log = logging.getLogger("gogate.server")
conn_log = logging.getLogger("gogate.conn")
hub_log = logging.getLogger("gogate.hub")
backend_log = logging.getLogger("gogate.backend")
internal_log = logging.getLogger("gogate.internal")

# Context keys a record may carry through ``extra=``; both formatters print them when present.
CONTEXT_KEYS = ("worker", "conn_id", "user_id", "chat_id", "message_id", "event", "code",
                "reason", "remote", "status", "endpoint", "duration_ms")

_TOKEN_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|Bearer\s+\S+", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace anything shaped like a JWT or a bearer credential."""
    return _TOKEN_LIKE.sub("[redacted]", text)


def timestamp(record: logging.LogRecord) -> str:
    """The record's time in ISO 8601, UTC, to the millisecond: ``2026-01-01T12:00:00.123Z``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.123Z INFO gogate.conn connected conn_id=7 user_id=1``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [timestamp(record), record.levelname, record.name, redact(record.getMessage())]
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                parts.append(f"{key}={value}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg`` and
    the context keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class _WorkerFilter(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


class _ClientFaultFilter(logging.Filter):
    """picows reports each client that breaks the protocol ("WS parser error: ...") at ERROR,
    though the gateway answers it with the close code the protocol asks for: the fault is the
    client's, and any client could fill the log with such lines. They are lowered to DEBUG
    (shown only when picows logs at DEBUG); picows' other errors pass as they are. It filters
    at the handler: picows logs through a logger per connection, which never consults the
    filters of the ``picows`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno > logging.DEBUG and record.name.startswith("picows.")
                and isinstance(record.msg, str) and record.msg.startswith("WS parser error")):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("picows").isEnabledFor(logging.DEBUG)
        return True


def configure(level: str, fmt: str, worker: int | None = None) -> None:
    """Send every ``gogate`` record to stderr in the chosen format; quiet the libraries.
    A worker of several stamps its index on every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ClientFaultFilter())
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("gogate").setLevel(level.upper())
    # picows logs every disconnect at INFO; the gateway logs its own lifecycle instead.
    logging.getLogger("picows").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
