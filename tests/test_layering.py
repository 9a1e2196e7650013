"""The imports run one way (STYLE.md, "The shape of the house"): each module is imported in a
fresh interpreter and what it pulled into ``sys.modules`` is checked. Also: ``__all__`` is
honest."""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MODULES = [
    "gogate",
    "gogate.backend",
    "gogate.broker",
    "gogate.cli",
    "gogate.config",
    "gogate.connection",
    "gogate.errors",
    "gogate.events",
    "gogate.handlers",
    "gogate.hub",
    "gogate.internal",
    "gogate.log",
    "gogate.members",
    "gogate.metrics",
    "gogate.server",
    "gogate_fast",
    "gogate_fast._pure",
]

# msgspec with its type-introspection helpers loaded: what "msgspec" itself brings along
# (it uses typing_extensions when installed).
MSGSPEC = "msgspec._utils"

_PROBE = "import importlib, json, sys; importlib.import_module(sys.argv[1]); " \
         "print(json.dumps(sorted(sys.modules)))"


@functools.cache
def imported_by() -> dict[str, frozenset[str]]:
    """For each module (and the empty baseline), the modules a fresh interpreter loads."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GOGATE_NO_EXTENSIONS", None)
    probes = {name: subprocess.Popen([sys.executable, "-c", _PROBE, name or "sys"], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
              for name in ["", MSGSPEC, *MODULES]}
    loaded: dict[str, frozenset[str]] = {}
    for name, probe in probes.items():
        out, err = probe.communicate(timeout=60)
        assert probe.returncode == 0, f"importing {name} failed:\n{err}"
        loaded[name] = frozenset(json.loads(out))
    baseline = loaded.pop("")
    return {name: mods - baseline for name, mods in loaded.items()}


def top(module: str) -> str:
    return module.split(".", 1)[0]


def gogate_modules(module: str) -> set[str]:
    return {m for m in imported_by()[module] if top(m) == "gogate"}


def test_gogate_fast_imports_nothing_of_gogate() -> None:
    for module in ("gogate_fast", "gogate_fast._pure"):
        assert gogate_modules(module) == set(), module


@pytest.mark.parametrize("module", ["gogate.config", "gogate.errors", "gogate.events",
                                    "gogate.log"])
def test_base_modules_use_only_stdlib_and_msgspec(module: str) -> None:
    loaded = imported_by()[module]
    brought_by_msgspec = imported_by()[MSGSPEC]
    foreign = sorted(m for m in loaded - brought_by_msgspec
                     if top(m) not in sys.stdlib_module_names
                     and top(m) not in ("msgspec", "gogate"))
    assert foreign == [], f"{module} imports {foreign}"
    for name in ("aiohttp", "picows", "prometheus_client", "uvloop"):
        assert name not in {top(m) for m in loaded}, f"{module} imports {name}"
    others = gogate_modules(module) - {"gogate", "gogate.errors", module}
    assert others == set(), f"{module} imports {sorted(others)}"


@pytest.mark.parametrize("module", ["gogate.hub", "gogate.broker"])
def test_hub_and_broker_import_neither_picows_nor_aiohttp(module: str) -> None:
    loaded = {top(m) for m in imported_by()[module]}
    assert "picows" not in loaded
    assert "aiohttp" not in loaded


def test_connection_does_not_import_aiohttp() -> None:
    loaded = {top(m) for m in imported_by()["gogate.connection"]}
    assert "aiohttp" not in loaded, (
        "gogate.connection pulls in aiohttp via: "
        + ", ".join(sorted(m for m in gogate_modules("gogate.connection") - {"gogate.connection"}
                           if "aiohttp" in {top(x) for x in imported_by().get(m, ())})))


@pytest.mark.parametrize("module", [m for m in MODULES if m != "gogate.cli"])
def test_gateway_never_imports_the_dev_backend(module: str) -> None:
    assert "gogate.devbackend" not in imported_by()[module]


def test_cli_imports_the_dev_backend_only_when_asked() -> None:
    assert "gogate.devbackend" not in imported_by()["gogate.cli"]


def test_only_server_and_cli_import_everything() -> None:
    # Not a rule of its own, but the cheap check that ``server`` is the composition root.
    assert {"gogate.connection", "gogate.handlers", "gogate.hub", "gogate.backend",
            "gogate.broker", "gogate.members", "gogate.metrics"} <= gogate_modules(
        "gogate.server")


@pytest.mark.parametrize("module", [*MODULES, "gogate.devbackend"])
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    assert len(names) == len(set(names)), f"{module}.__all__ repeats a name"
    missing = [name for name in names if not hasattr(mod, name)]
    assert missing == [], f"{module}.__all__ names missing attributes: {missing}"
