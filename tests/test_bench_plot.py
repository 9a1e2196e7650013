"""``python -m bench.plot``: benchmark results (JSON) to the PNG charts the README shows, run
on a small committed sample of results."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

from bench.plot import FORMAT, charts, load

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "bench-sample.json"
CHARTS = {"fanout-cpu.png", "fanout-latency.png", "connect-rate.png", "memory.png"}


def plot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.plot", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_every_chart_is_drawn_from_the_sample(tmp_path: Path) -> None:
    done = plot(str(SAMPLE), "--out", str(tmp_path / "charts"))
    assert done.returncode == 0, done.stderr
    written = {Path(line).name for line in done.stdout.split()}
    assert written == CHARTS
    for name in CHARTS:
        width, height = png_size(tmp_path / "charts" / name)
        assert width >= 600 and height >= 300, (name, width, height)


def test_the_charts_show_the_figures_of_the_results() -> None:
    drawn = {chart.file: chart for chart in charts(load([SAMPLE]))}
    cpu = drawn["fanout-cpu.png"]
    assert cpu.groups == ["gogate", "gogate-pure", "picows-hub", "go"]  # gogate first
    assert [v for [v] in cpu.values] == [2.31, 3.86, 2.05, 5.42]
    assert cpu.ratios == ["0.43x go", "0.71x go", "0.38x go", ""]
    latency = drawn["fanout-latency.png"]
    assert latency.series == ["p50 ms", "p99 ms", "p999 ms"]
    assert latency.values[3] == [1.9, 9.8, 21.0]
    connect = drawn["connect-rate.png"]
    assert connect.groups == ["backend", "jwt", "warm"] and connect.series == ["gogate", "go"]
    assert connect.values[1] == [5200.0, 2350.0]
    assert math.isnan(connect.values[2][1])  # null: not measured, drawn as n/a
    assert [v for [v] in drawn["memory.png"].values] == [4.1, 4.3, 3.2, 19.5]


def test_a_later_file_replaces_a_scenario(tmp_path: Path) -> None:
    later = tmp_path / "later.json"
    later.write_text(json.dumps({"format": FORMAT, "scenarios": [
        {"name": "idle", "variant": "", "title": "idle",
         "rows": [{"system": "gogate", "values": {"KB/connection": 3.5}}]}]}))
    drawn = {chart.file: chart for chart in charts(load([SAMPLE, later]))}
    assert drawn["memory.png"].groups == ["gogate"]
    assert drawn["memory.png"].values == [[3.5]]
    assert drawn["fanout-cpu.png"].values[0] == [2.31]


def test_results_without_any_charted_figure_fail(tmp_path: Path) -> None:
    typing_only = tmp_path / "typing.json"
    typing_only.write_text(json.dumps({"format": FORMAT, "scenarios": [
        {"name": "typing", "rows": [{"system": "gogate", "values": {"members calls": 1}}]}]}))
    done = plot(str(typing_only), "--out", str(tmp_path / "charts"))
    assert done.returncode == 1
    assert "none of the figures" in done.stderr
    assert not (tmp_path / "charts").exists()


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    done = plot(str(other), "--out", str(tmp_path))
    assert done.returncode == 1
    assert f"not a results file of format '{FORMAT}'" in done.stderr
