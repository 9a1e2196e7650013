"""The operational files of the repository as the tests read them: the Dockerfile's
instructions, the Compose file, the systemd unit and the Grafana dashboard."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
UNIT = ROOT / "deploy" / "gogate.service"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


class Instruction:
    """One Dockerfile instruction: its keyword and its arguments (continuations joined)."""

    def __init__(self, keyword: str, arguments: str) -> None:
        self.keyword = keyword.upper()
        self.arguments = arguments

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ``CMD`` / ``HEALTHCHECK ... CMD``."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1]
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value


def dockerfile_stages() -> list[list[Instruction]]:
    """The instructions of each build stage, in order (stage 0 starts at the first FROM)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(keyword, " ".join(arguments.split())))
    return stages


def runtime_stage() -> list[Instruction]:
    return dockerfile_stages()[-1]


def one(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"{keyword}: {len(found)} in the stage"
    return found[0]


def image_env() -> dict[str, str]:
    """The variables the runtime stage sets with ``ENV``."""
    env: dict[str, str] = {}
    for instruction in runtime_stage():
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def image_copies() -> dict[str, Path]:
    """Where the runtime stage copies files of the build context: path in the image →
    path in the repository."""
    copies: dict[str, Path] = {}
    for instruction in runtime_stage():
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            source, target = instruction.arguments.split()
            copies[target] = ROOT / source
    return copies


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data
