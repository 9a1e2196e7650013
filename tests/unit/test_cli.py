"""The command line as a process: exit code 2 with one line naming the variable, and a
``--help`` that lists every setting with its variable, default and the order of sources."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gogate.config import FIELDS

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without any gogate variable, plus ``extra``."""
    names = {f.env for f in FIELDS}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gogate", *args], cwd=tmp, env=cli_env(**env),
                          capture_output=True, text=True, timeout=30)


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_cli_bad_env_value_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, PORT="abc", INTERNAL_API_KEY="k")
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "abc" in lines[0]


def test_cli_bad_flag_value_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--port", "abc", INTERNAL_API_KEY="k")
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "abc" in lines[0]


def test_cli_missing_internal_api_key_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path)
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "INTERNAL_API_KEY" in lines[0]


def test_cli_help_lists_every_setting(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    expected = [f"--{f.name.replace('_', '-')}" for f in FIELDS] + ["--dev", "--env-file"]
    for flag in expected:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout), flag


def test_cli_help_explains_each_setting_and_the_sources(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help")
    text = " ".join(result.stdout.split())
    for field in FIELDS:
        entry = re.search(rf"{re.escape(field.flag)} {field.env} (.*?)\(variable {field.env}, "
                          rf"default: ([^)]*)\)", text)
        assert entry is not None, field.env
        assert entry.group(1).startswith(" ".join(field.help.split())), field.env
        assert entry.group(2) == field.shown_default, field.env
    order = [text.index(word) for word in (".env file", "environment variable", "the flag")]
    assert order == sorted(order)
    assert "INTERNAL_API_KEY is required" in text


@pytest.mark.parametrize(("env", "named"), [
    ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
    ({"JWT_PUBLIC_KEY": "missing.pem"}, "JWT_PUBLIC_KEY"),
    ({"JWT_SECRET": "s", "JWT_PUBLIC_KEY": "key.pem"}, "JWT_SECRET"),
    ({"LISTEN_BACKLOG": "0"}, "LISTEN_BACKLOG"),
])
def test_cli_refuses_token_settings_with_exit_2(tmp_path: Path, env: dict[str, str],
                                                named: str) -> None:
    (tmp_path / "key.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n"
                                      "-----END PUBLIC KEY-----\n")
    result = run_cli(tmp_path, INTERNAL_API_KEY="k", **env)
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
