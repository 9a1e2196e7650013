"""The benchmarks' results files: one JSON document per run (format ``gogate-bench/1``),
written by ``bench.loadgen``, ``bench.redis_cost`` and ``bench.streams_memory`` into
``bench/results/`` and read by ``bench.plot``. A figure that could not be measured is ``null``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "RESULTS", "path_for", "write"]

FORMAT = "gogate-bench/1"
RESULTS = Path(__file__).resolve().parent / "results"


def path_for(tool: str, chosen: Path | None, smoke: bool) -> Path | None:
    """Where a run of ``tool`` writes its results: ``chosen`` (``--json``), else a new file
    named after the tool and the time in ``bench/results``; a smoke run writes only when asked."""
    if chosen is not None or smoke:
        return chosen
    return RESULTS / time.strftime(f"{tool}-%Y%m%d-%H%M%S.json", time.gmtime())


def write(path: Path, module: str, scenarios: Sequence[dict[str, Any]],
          baselines: Iterable[str] = (), **machine: str) -> None:
    """Write the run's ``scenarios`` to ``path``, with how it was run (``python -m module`` and
    this process's arguments) and on what (CPU count, Python, and ``machine``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": (f"python -m {module} " + shlex.join(sys.argv[1:])).strip(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], **machine},
        "baselines": list(baselines),
        "scenarios": list(scenarios),
    }
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    print(f"\n# results written to {path}")
