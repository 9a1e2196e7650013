"""The imports run one way. Each module of ``gogate`` and ``gogate_fast`` is imported in a fresh
interpreter and what it pulled into ``sys.modules`` is checked against the layers below; a
module that belongs to no layer fails too, so that a new module is placed on purpose.

The layers, from the bottom:

- ``gogate_fast``: the hot path; it imports nothing of ``gogate``.
- leaves (:data:`LEAVES`): the standard library and msgspec only (``metrics`` also
  ``prometheus_client`` and ``gogate_fast``); among ``gogate``, other leaves only.
- core (:data:`CORE`, in order): each module may import the leaves and the core modules listed
  before it, nothing after it. ``server``, the composition root, comes last: it is the only
  module outside the entry points that imports every core module.
- ``gogate.cluster``: what exists only with several workers or hosts; it may import the leaves,
  the core and itself. No core module imports it.
- entry points (:data:`ENTRY_POINTS`): may import anything; nothing imports them.
- ``gogate.devbackend``: the development backend, a program of its own that the gateway never
  imports (the command line does, only with ``--dev``).

Also: ``__all__`` is honest in every module.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LEAVES = ("gogate.config", "gogate.configparse", "gogate.devports",
          "gogate.errors",
          "gogate.events", "gogate.lifecycle", "gogate.log",
          "gogate.metrics", "gogate.models", "gogate.policy", "gogate.proxy",
          "gogate.registry")
CORE = (
    "gogate.streams",  # the per-user streams of kept events
    "gogate.auth",  # who holds a token (a package: every module in it)
    "gogate.backend",
    "gogate.members",
    "gogate.hub",
    "gogate.recovery",  # a connection's resume: replay paced by its socket, then live
    "gogate.handlers",
    "gogate.frames",
    "gogate.admission",  # who may open a connection; its refusals are built once with picows
    "gogate.connection",
    "gogate.dispatch",
    "gogate.internal",
    "gogate.listener",  # the public port's socket and per-connection protocol
    "gogate.server",
)
CLUSTER = "gogate.cluster"
DEVBACKEND = "gogate.devbackend"
ENTRY_POINTS = ("gogate.__main__", "gogate.cli", "gogate.cluster.link")
THIRD_PARTY_OF_LEAVES = {"msgspec"}
THIRD_PARTY_OF_METRICS = {"msgspec", "prometheus_client", "gogate_fast"}  # and what that loads

# msgspec with its type-introspection helpers loaded: what "msgspec" itself brings along
# (it uses typing_extensions when installed).
MSGSPEC = "msgspec._utils"

_PROBE = "import importlib, json, sys; importlib.import_module(sys.argv[1]); " \
         "print(json.dumps(sorted(sys.modules)))"


def discover() -> list[str]:
    """Every module of ``gogate`` and ``gogate_fast``, found on disk (nothing is imported),
    but the ``__main__`` modules: importing one runs it (they import only ``cli`` or their
    own package)."""
    names = []
    for package in ("gogate", "gogate_fast"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts[-1] != "__main__":
                names.append(".".join(parts))
    return names


MODULES = discover()


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def core_rank(module: str) -> int | None:
    for rank, prefix in enumerate(CORE):
        if within(module, prefix):
            return rank
    return None


def _probe(name: str) -> tuple[str, frozenset[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GOGATE_NO_EXTENSIONS", None)
    probe = subprocess.run([sys.executable, "-c", _PROBE, name or "sys"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, f"importing {name} failed:\n{probe.stderr}"
    return name, frozenset(json.loads(probe.stdout))


@functools.cache
def imported_by() -> dict[str, frozenset[str]]:
    """For each module (and the empty baseline), the modules a fresh interpreter loads."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = dict(pool.map(_probe, ["", MSGSPEC, *MODULES]))
    baseline = loaded.pop("")
    return {name: mods - baseline for name, mods in loaded.items()}


def top(module: str) -> str:
    return module.split(".", 1)[0]


def gogate_modules(module: str) -> set[str]:
    """The modules of ``gogate`` that importing ``module`` loads, itself and ``gogate``
    excluded."""
    return {m for m in imported_by()[module]
            if top(m) == "gogate" and m not in ("gogate", module)}


def foreign(module: str) -> set[str]:
    """The top-level packages outside the standard library and ``gogate`` that ``module``
    loads, beyond what msgspec brings along."""
    brought_by_msgspec = imported_by()[MSGSPEC]
    return {top(m) for m in imported_by()[module] - brought_by_msgspec
            if top(m) not in sys.stdlib_module_names and top(m) != "gogate"}


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES
                if top(m) == "gogate" and m != "gogate" and m not in LEAVES
                and core_rank(m) is None and not within(m, CLUSTER)
                and not within(m, DEVBACKEND) and m not in ENTRY_POINTS]
    assert unplaced == [], f"place these modules in a layer of {__name__}: {unplaced}"


@pytest.mark.parametrize("module", [m for m in MODULES if top(m) == "gogate_fast"])
def test_gogate_fast_imports_nothing_of_gogate(module: str) -> None:
    assert gogate_modules(module) == set()


@pytest.mark.parametrize("module", LEAVES)
def test_leaves_use_only_the_stdlib_msgspec_and_other_leaves(module: str) -> None:
    allowed = THIRD_PARTY_OF_LEAVES
    if module == "gogate.metrics":
        allowed = THIRD_PARTY_OF_METRICS | foreign("gogate_fast")
    assert foreign(module) <= allowed, f"{module} imports {sorted(foreign(module) - allowed)}"
    above = sorted(gogate_modules(module) - set(LEAVES))
    assert above == [], f"{module} imports {above}"


@pytest.mark.parametrize("module", [m for m in MODULES if core_rank(m) is not None])
def test_core_imports_only_what_is_below_it(module: str) -> None:
    rank = core_rank(module)
    assert rank is not None
    wrong = sorted(m for m in gogate_modules(module)
                   if m not in LEAVES and not within(m, CORE[rank])
                   and ((r := core_rank(m)) is None or r > rank))
    assert wrong == [], f"{module} imports {wrong}"


@pytest.mark.parametrize("module", [m for m in MODULES if within(m, CLUSTER)
                                    and m not in ENTRY_POINTS])
def test_cluster_imports_leaves_core_and_itself(module: str) -> None:
    wrong = sorted(m for m in gogate_modules(module)
                   if m not in LEAVES and core_rank(m) is None and not within(m, CLUSTER))
    assert wrong == [], f"{module} imports {wrong}"
    assert "gogate.server" not in gogate_modules(module), f"{module} imports the server"


@pytest.mark.parametrize("module", [m for m in MODULES if m not in ENTRY_POINTS])
def test_nothing_imports_an_entry_point(module: str) -> None:
    wrong = sorted(gogate_modules(module) & set(ENTRY_POINTS))
    assert wrong == [], f"{module} imports {wrong}"


@pytest.mark.parametrize("module", ["gogate.hub", "gogate.handlers"])
def test_hub_and_flows_import_no_listener(module: str) -> None:
    assert "picows" not in foreign(module)
    if module == "gogate.hub":
        assert "aiohttp" not in foreign(module)


def test_connection_does_not_import_aiohttp() -> None:
    assert "aiohttp" not in foreign("gogate.connection"), (
        "gogate.connection pulls in aiohttp via: "
        + ", ".join(sorted(m for m in gogate_modules("gogate.connection")
                           if "aiohttp" in foreign(m))))


def test_only_the_server_imports_every_core_module() -> None:
    # a core module is in use once a module outside its own package imports it
    in_use = {x for m in MODULES for x in gogate_modules(m)
              if (rank := core_rank(x)) is not None and not within(m, CORE[rank])}
    core = in_use - {"gogate.server"}
    assert sorted(core - gogate_modules("gogate.server")) == []
    for module in MODULES:
        if module not in ENTRY_POINTS and module != "gogate.server":
            assert "gogate.server" not in gogate_modules(module), module


@pytest.mark.parametrize("module", [m for m in MODULES if not within(m, DEVBACKEND)])
def test_gateway_never_imports_the_dev_backend(module: str) -> None:
    assert not any(within(m, DEVBACKEND) for m in imported_by()[module]), module


@pytest.mark.parametrize("module", [m for m in MODULES if within(m, DEVBACKEND)])
def test_dev_backend_imports_no_gateway_part(module: str) -> None:
    wrong = sorted(m for m in gogate_modules(module)
                   if not within(m, DEVBACKEND) and m not in LEAVES)
    assert wrong == [], f"{module} imports {wrong}"


@pytest.mark.parametrize("module", MODULES)
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    assert len(names) == len(set(names)), f"{module}.__all__ repeats a name"
    missing = [name for name in names if not hasattr(mod, name)]
    assert missing == [], f"{module}.__all__ names missing attributes: {missing}"
