"""The gateway's hot path: server frames built once, per-connection sinks that collect frames
into one write and queue them in a bounded ring while the socket is paused, the fan-out
loop, and the appending of an event to the streams of its receivers.

Two implementations share one interface: the compiled module, when it is built and
``GOGATE_NO_EXTENSIONS`` is not set, and the pure-Python twin otherwise. ``IMPLEMENTATION`` says
which one runs ("compiled" or "pure"), and ``PURE_REASON`` why the twin runs: the gateway logs it
at startup, as a warning unless it was asked for (``PURE_ASKED``).
"""

from __future__ import annotations

import os

from gogate_fast import _pure

__all__ = ["IMPLEMENTATION", "PURE_ASKED", "PURE_REASON", "Flusher", "Kept", "Sink",
           "StreamLog", "append_all", "build_frame", "deliver", "stats"]

IMPLEMENTATION: str
PURE_REASON: str | None = None  # None: the compiled module runs
PURE_ASKED = bool(os.environ.get("GOGATE_NO_EXTENSIONS"))
if PURE_ASKED:
    _impl = _pure
    IMPLEMENTATION = "pure"
    PURE_REASON = "GOGATE_NO_EXTENSIONS is set"
else:
    try:
        from gogate_fast import _fast as _impl  # type: ignore[no-redef]
        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _impl = _pure
        IMPLEMENTATION = "pure"
        PURE_REASON = (f"the compiled module could not be loaded ({exc}); build it with "
                       "`pip install -e .` (needs a C compiler)")

Flusher = _impl.Flusher
Kept = _impl.Kept
StreamLog = _impl.StreamLog
append_all = _impl.append_all
Sink = _impl.Sink
build_frame = _impl.build_frame
deliver = _impl.deliver
stats = _impl.stats
