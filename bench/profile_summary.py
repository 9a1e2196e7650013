"""Summarise a py-spy profile (collapsed stacks, ``--format raw``) of the gateway.

Prints where the samples fall: the top functions by self time, and the share of a few areas
of the gateway (socket writes, the backend client, the fan-out, decoding, the loop itself).

    python -m bench.profile_summary /tmp/prof/fanout-saturation-gogate.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

__all__ = ["AREAS", "main", "summarise"]

# Area → substrings of a frame that place a sample in it (first match, leaf upwards).
AREAS: dict[str, tuple[str, ...]] = {
    "socket writes (send syscalls)": ("send (libc", "writev (libc", "write (libc"),
    "socket reads and polling": ("recv (libc", "read (libc", "epoll_pwait"),
    "backend client (aiohttp)": ("aiohttp/", "BackendClient"),
    "fan-out and coalescing (gogate_fast)": ("gogate_fast/",),
    "event decode/encode (msgspec)": ("decode_inbound", "encode", "msgspec"),
    "WebSocket handshake and frames (picows)": ("picows",),
    "connection state machine": ("gogate/connection.py",),
    "handlers, hub, members": ("gogate/handlers.py", "gogate/hub.py", "gogate/members.py"),
    "metrics and logging": ("prometheus_client", "logging/"),
    "garbage collection": ("gc_collect",),
}


def summarise(path: Path, top: int = 15) -> str:
    leaf: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        leaf[frames[-1]] += samples
        area = "other (the event loop, Python runtime)"
        for frame in reversed(frames):
            hit = next((name for name, keys in AREAS.items() if any(k in frame for k in keys)),
                       None)
            if hit is not None:
                area = hit
                break
        areas[area] += samples
    lines = [f"{path.name}: {total} samples", "", "| area | share |", "|---|---|"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in areas.most_common()]
    lines += ["", "| function (self time) | share |", "|---|---|"]
    lines += [f"| `{name[:90]}` | {n / total:.1%} |" for name, n in leaf.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    for arg in sys.argv[1:]:
        print(summarise(Path(arg)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
