"""``docs/protocol.md`` kept in step with the code: its tables of client events, error codes,
close codes, internal API routes, backend calls and metrics name exactly what the code has;
and the documentation refers to nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gogate.cluster.metrics import HostMetrics
from gogate.errors import Close, ErrorCode
from gogate.events import CLIENT_EVENTS
from gogate.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "protocol.md"
DOCS = [PROTOCOL, ROOT / "docs" / "production.md"]
OPERATIONS = [*DOCS, ROOT / "Dockerfile", ROOT / "docker-compose.yml", ROOT / "CHANGELOG.md",
              ROOT / "deploy" / "gogate.service", ROOT / "deploy" / "healthcheck.py"]


def section(title: str) -> str:
    """The text of the ``## N. <title>`` section."""
    text = PROTOCOL.read_text()
    match = re.search(rf"^## \d+\. {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {title!r} in {PROTOCOL.name}"
    return match[1]


def first_cells(text: str) -> list[str]:
    """The first cell of every table row (header and rule rows left out)."""
    cells = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells.append(line.split("|")[1].strip())
    return cells[1:] if cells else cells


def test_client_events_table_names_every_client_event() -> None:
    names = {cell.strip("`") for cell in first_cells(section("Client events").split("\n\n")[0])}
    assert names == set(CLIENT_EVENTS)


def test_error_table_names_every_error_code() -> None:
    codes = {c.strip("`") for cell in first_cells(section("Error codes")) for c in cell.split(",")}
    codes = {c.strip().strip("`") for c in codes}
    assert codes == {code.value for code in ErrorCode}


def test_close_table_names_every_close_code() -> None:
    text = section("Connection lifetime and close codes")
    documented = {int(cell) for cell in first_cells(text) if cell.isdigit()}
    assert {reason.value.code for reason in Close} <= documented


def test_internal_api_table_names_every_route() -> None:
    source = (ROOT / "gogate" / "internal.py").read_text()
    routes = set(re.findall(r'add_(?:get|post)\(\s*"(/api/[^"]+)"', source))
    assert routes, "no routes found in gogate/internal.py"
    text = section("The internal API, for the backend")
    for route in routes:
        assert f" {route}" in text or f"`{route}" in text, route


def normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_backend_table_names_every_backend_call() -> None:
    source = (ROOT / "gogate" / "backend.py").read_text()
    calls = {normalise(p) for p in re.findall(r'f?"(/api/[^"?]+)"', source)}
    assert len(calls) >= 5, calls
    text = section("What gogate asks of the backend")
    documented = {normalise(p) for p in re.findall(r"`(?:GET|POST) (/api/\S+)`", text)}
    assert calls == documented


def test_metrics_table_names_every_family() -> None:
    """Every family of a worker and of a supervisor is in the table, and nothing else."""
    families = {f.name for f in Metrics().registry.collect()}
    families |= {f.name for f in HostMetrics(1, lambda: 1).own.collect()}
    families = {name for name in families if name.startswith("gogate_")}
    text = section("Metrics")
    documented = set()
    for cell in first_cells(text):
        for name in re.findall(r"`(gogate_[a-z_]+)", cell):
            documented.add(name.removesuffix("_total").removesuffix("_info"))
    families = {name.removesuffix("_info") for name in families}
    assert documented == families, (sorted(families - documented), sorted(documented - families))


@pytest.mark.parametrize("path", OPERATIONS, ids=lambda p: p.name)
def test_refers_to_nothing_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert "CONTRACT" not in text
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in link:
            continue
        target = (path.parent / link).resolve()
        assert target.is_relative_to(ROOT), link
        assert target.exists(), link


def test_internal_links_point_at_sections() -> None:
    text = PROTOCOL.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor
