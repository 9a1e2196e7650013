"""A worker process of ``--workers N``, started by :mod:`gogate.supervisor`.

It reads its settings, index and bus path from the environment the supervisor gives it, and
serves like a single gateway, except that it shares the port and reaches the other workers
through the supervisor's bus.
"""

from __future__ import annotations

import os
import sys

import msgspec
import uvloop

from gogate.broker import BusBroker
from gogate.config import Settings
from gogate.log import configure
from gogate.server import run

__all__ = ["main"]


def main() -> int:
    settings = msgspec.json.decode(os.environ["GOGATE_WORKER_SETTINGS"], type=Settings)
    index = int(os.environ["GOGATE_WORKER_INDEX"])
    configure(settings.log_level, settings.log_format, worker=index)
    broker = BusBroker(os.environ["GOGATE_BUS"], index)
    return uvloop.run(run(settings, broker=broker, index=index))


if __name__ == "__main__":
    sys.exit(main())
