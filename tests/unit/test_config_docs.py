"""The documents that list the settings agree with their declaration in ``gogate.config``:
``.env.example`` lists every setting with its default and nothing else, and the README's
configuration table names every variable once, with the default that the gateway uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gogate.config import FIELDS, Field, Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"

# ``NAME=value``, ``export NAME=value`` or the same behind ``#`` (a commented-out setting).
_ASSIGNMENT = re.compile(r"^\s*(#)?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=(.*)$")


def _value(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value.split(" #", 1)[0].rstrip()


def assignments() -> list[tuple[str, str, bool]]:
    """Every ``(name, value, commented)`` of the example file."""
    found = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if match is not None:
            commented, name, value = match.groups()
            found.append((name, _value(value), commented is not None))
    return found


def test_example_exists() -> None:
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.env)
def test_every_setting_listed_with_its_default(field: Field) -> None:
    entries = [(value, commented) for name, value, commented in assignments()
               if name == field.env]
    assert entries, f"{field.env} is not in .env.example"
    default = getattr(Settings(), field.name)
    # An active line takes effect when the file is copied to .env: it must hold the default.
    # Only commented lines: one of them must show the default (others may be examples).
    active = [value for value, commented in entries if not commented]
    candidates = active or [value for value, _ in entries]
    parsed = [field.parse(value) for value in candidates]
    if active:
        assert all(p == default for p in parsed), (field.env, candidates, default)
    else:
        assert default in parsed, (field.env, candidates, default)


def test_no_unknown_variable() -> None:
    known = {f.env for f in FIELDS}
    unknown = sorted({name for name, _, _ in assignments()} - known)
    assert not unknown, f"unknown variables in .env.example: {unknown}"


def test_no_setting_listed_twice_as_active() -> None:
    active = [name for name, _, commented in assignments() if not commented]
    assert len(active) == len(set(active)), sorted(n for n in active if active.count(n) > 1)


# --- the README's table --------------------------------------------------------------------


def readme_defaults() -> dict[str, list[str]]:
    """Variable → the defaults its rows give, from the table under "### Configuration".

    A row may name several variables (`` `HOST`, `PORT` ``) with one default each, separated
    by commas, or one default for all of them (``empty``).
    """
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Configuration\n", 1)[1].split("\n#", 1)[0]
    found: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 3:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = [d.strip().strip("`") for d in cells[2].split(", ")]
        if len(defaults) == 1:
            defaults *= len(names)
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults, strict=True):
            found.setdefault(name, []).append(default)
    return found


def test_readme_table_names_every_setting_once() -> None:
    listed = readme_defaults()
    assert sorted(listed) == sorted(f.env for f in FIELDS)
    assert all(len(rows) == 1 for rows in listed.values()), listed


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.env)
def test_readme_table_shows_the_default(field: Field) -> None:
    assert readme_defaults().get(field.env) == [field.shown_default]
