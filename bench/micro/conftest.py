"""Header of the micro-benchmark run: which implementations, interpreter and libraries ran."""

from __future__ import annotations

import platform

import msgspec
import pytest

import gogate_fast
from gogate_fast import _fast, _pure


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"gogate micro-benchmarks: pure = {_pure.__file__}",
        f"  compiled = {_fast.__file__}",
        f"  gogate_fast would run: {gogate_fast.IMPLEMENTATION}; no event loop (call_soon is "
        "recorded, the flush is run by the benchmark body)",
        f"  {platform.python_implementation()} {platform.python_version()}, "
        f"msgspec {msgspec.__version__}, {platform.machine()}",
    ]
