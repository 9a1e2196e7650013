"""The gateway's hot path: server frames built once, per-connection sinks that collect frames
into one write and queue them in a bounded ring while the socket is paused, and the fan-out
loop.

Two implementations share one interface: the compiled module, when it is built and
``GOGATE_NO_EXTENSIONS`` is not set, and the pure-Python twin otherwise. ``IMPLEMENTATION`` says
which one runs ("compiled" or "pure").
"""

from __future__ import annotations

import os

from gogate_fast import _pure

__all__ = ["IMPLEMENTATION", "Flusher", "Sink", "build_frame", "deliver", "stats"]

IMPLEMENTATION: str
if os.environ.get("GOGATE_NO_EXTENSIONS"):
    _impl = _pure
    IMPLEMENTATION = "pure"
else:
    try:
        from gogate_fast import _fast as _impl  # type: ignore[no-redef]
        IMPLEMENTATION = "compiled"
    except ImportError:
        _impl = _pure
        IMPLEMENTATION = "pure"

Flusher = _impl.Flusher
Sink = _impl.Sink
build_frame = _impl.build_frame
deliver = _impl.deliver
stats = _impl.stats
