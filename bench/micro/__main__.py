"""``python -m bench.micro``: run the micro-benchmarks and print one table per group.

Extra arguments go to pytest after the defaults, so a later option wins:
``python -m bench.micro -k fanout --benchmark-max-time=2``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

OPTIONS = [
    "--benchmark-only",
    "--benchmark-group-by=group",
    "--benchmark-columns=min,median,mean,ops",
    "--benchmark-max-time=0.2",  # seconds per benchmark: the whole table in a few seconds
]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return int(pytest.main([str(Path(__file__).resolve().parent), *OPTIONS, *args]))


if __name__ == "__main__":
    sys.exit(main())
