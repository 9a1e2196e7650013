"""Charts of the load benchmarks: ``python -m bench.plot [RESULTS.json ...] [--out DIR]``.

Reads the results ``python -m bench.loadgen`` writes (by default every
``bench/results/loadgen*.json``, in name order: a later file's scenario replaces an earlier
one's) and draws, with matplotlib, one PNG per figure the README shows (in ``docs/bench/`` by
default):

``fanout-cpu.png``     gateway CPU per delivered message at saturation, per system
``fanout-latency.png`` delivery latency p50 / p99 / p999 at the fixed delivery rate
``connect-rate.png``   connections accepted and authenticated per second, per variant
``memory.png``         gateway memory per idle authenticated connection

A results file is one JSON object::

    {"format": "gogate-bench/1",
     "created": "2026-01-01T12:00:00Z",              # when the run ended (UTC)
     "command": "python -m bench.loadgen all ...",   # optional: how it was run
     "machine": {"cpus": 2, "python": "3.11.7"},     # optional, shown under the charts
     "baselines": ["go"],                            # systems that are other gateways
     "scenarios": [
        {"name": "fanout", "variant": "", "title": "fanout: 1 chat x 1000 members, ...",
         "rows": [{"system": "gogate", "values": {"gw µs/delivery": 2.1, "p99 ms": 1.9}},
                  ...]},
        ...]}

Each row is one line of the table the load generator prints, with the same column names; a
figure that could not be measured is ``null``. A figure missing from every row leaves its chart
out; no chart at all is an error (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.resultsfile import FORMAT, RESULTS

__all__ = ["FORMAT", "Chart", "Results", "charts", "draw", "load", "main"]

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench"

# Systems in the order they are drawn, gogate first; others (baselines) follow by name.
_ORDER = ("gogate", "gogate-pure", "picows-hub", "picows-hub-uv")
_COLOURS = {"gogate": "#3b5bdb", "gogate-pure": "#91a7ff", "picows-hub": "#adb5bd",
            "picows-hub-uv": "#868e96"}
_BASELINE_COLOURS = ("#e8590c", "#f59f00", "#c2255c", "#2f9e44")


class ResultsError(ValueError):
    """A results file that is not in the format above."""


@dataclass
class Scenario:
    name: str
    variant: str
    title: str
    rows: dict[str, dict[str, float]]  # system → figure → value (NaN when not measured)


@dataclass
class Results:
    """Every scenario of one or more results files, by (name, variant)."""

    scenarios: dict[tuple[str, str], Scenario] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def variants(self, name: str) -> list[Scenario]:
        return [s for (n, _), s in self.scenarios.items() if n == name]


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResultsError(f"a figure is {value!r}, not a number or null")
    return float(value)


def load(paths: Sequence[Path]) -> Results:
    """The scenarios of ``paths``, later files replacing earlier ones scenario by scenario."""
    results = Results()
    for path in paths:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ResultsError(f"{path}: not a results file of format {FORMAT!r}")
        for name in doc.get("baselines", []):
            if name not in results.baselines:
                results.baselines.append(str(name))
        machine = doc.get("machine") or {}
        note = ", ".join(f"{k} {v}" for k, v in machine.items())
        results.notes.append(f"{doc.get('created', '')} {note}".strip())
        for entry in doc.get("scenarios", []):
            try:
                rows = {str(row["system"]): {str(k): _number(v)
                                             for k, v in row["values"].items()}
                        for row in entry["rows"]}
                scenario = Scenario(str(entry["name"]), str(entry.get("variant", "")),
                                    str(entry.get("title", entry["name"])), rows)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ResultsError(f"{path}: a scenario lacks {exc}") from None
            results.scenarios[(scenario.name, scenario.variant)] = scenario
    return results


def _systems(names: Sequence[str]) -> list[str]:
    known = [s for s in _ORDER if s in names]
    return known + sorted(s for s in names if s not in known)


def _colour(system: str, baselines: Sequence[str]) -> str:
    if system in _COLOURS:
        return _COLOURS[system]
    index = baselines.index(system) if system in baselines else len(baselines)
    return _BASELINE_COLOURS[index % len(_BASELINE_COLOURS)]


@dataclass
class Chart:
    """One chart: bars of ``series`` (figure names) for each group (a system, or a variant)."""

    file: str
    title: str
    unit: str
    groups: list[str]
    series: list[str]
    values: list[list[float]]  # values[group][series]
    colours: list[str]  # one per group when there is one series, else one per series
    better: str  # "lower" or "higher", said on the chart
    #: Below each value of a one-series chart: its ratio to a baseline ("0.45x go").
    ratios: list[str] = field(default_factory=list)

    def measured(self) -> bool:
        return any(not math.isnan(v) for row in self.values for v in row)


def _per_system(results: Results, name: str, figure: str, file: str, title: str, unit: str,
                better: str) -> Chart | None:
    scenario = results.scenarios.get((name, ""))
    if scenario is None:
        variants = results.variants(name)
        scenario = variants[0] if variants else None
    if scenario is None:
        return None
    systems = _systems(list(scenario.rows))
    values = [[scenario.rows[s].get(figure, math.nan)] for s in systems]
    chart = Chart(file, title, unit, systems, [figure], values,
                  [_colour(s, results.baselines) for s in systems], better)
    base = next((b for b in results.baselines if b in systems), None)
    if base is not None:
        reference = values[systems.index(base)][0]
        chart.ratios = ["" if s == base or not reference or math.isnan(v[0])
                        else f"{v[0] / reference:.2f}x {base}"
                        for s, v in zip(systems, values, strict=True)]
    return chart


def charts(results: Results) -> list[Chart]:
    """The charts the results have figures for."""
    drawn: list[Chart | None] = [
        _per_system(results, "fanout", "gw µs/delivery", "fanout-cpu.png",
                    "Gateway CPU per delivered message (fan-out at saturation)", "µs of CPU",
                    "lower"),
        _per_system(results, "idle", "KB/connection", "memory.png",
                    "Gateway memory per idle authenticated connection", "KB", "lower"),
    ]
    fanout = results.scenarios.get(("fanout", ""))
    if fanout is not None:
        systems = _systems(list(fanout.rows))
        series = [p for p in ("p50 ms", "p99 ms", "p999 ms")
                  if any(p in fanout.rows[s] for s in systems)]
        drawn.append(Chart("fanout-latency.png",
                           "Delivery latency at a fixed rate (send to receive)", "ms", systems,
                           series, [[fanout.rows[s].get(p, math.nan) for p in series]
                                    for s in systems],
                           ["#91a7ff", "#3b5bdb", "#1c2f8a"][:len(series)], "lower"))
    connects = results.variants("connect")
    if connects:
        systems = _systems(sorted({s for c in connects for s in c.rows}))
        drawn.append(Chart(
            "connect-rate.png", "Connections accepted and authenticated per second",
            "connections/s", [c.variant or c.name for c in connects], systems,
            [[c.rows.get(s, {}).get("connects/s", math.nan) for s in systems]
             for c in connects],
            [_colour(s, results.baselines) for s in systems], "higher"))
    return [c for c in drawn if c is not None and c.measured()]


def _label(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _bars(axes: Axes, chart: Chart) -> None:
    count = len(chart.series)
    width = 0.8 / count
    for j, name in enumerate(chart.series):
        xs = [i + (j - (count - 1) / 2) * width for i in range(len(chart.groups))]
        heights = [0.0 if math.isnan(row[j]) else row[j] for row in chart.values]
        colours = chart.colours if count == 1 else [chart.colours[j]] * len(xs)
        bars = axes.bar(xs, heights, width * 0.92, color=colours,
                        label=name.removesuffix(" ms") if count > 1 else None)
        labels = [_label(row[j]) for row in chart.values]
        if chart.ratios:
            labels = [f"{label}\n{ratio}" if ratio else label
                      for label, ratio in zip(labels, chart.ratios, strict=True)]
        axes.bar_label(bars, labels=labels, padding=2, fontsize=8)
    axes.set_xticks(range(len(chart.groups)), chart.groups)
    axes.set_ylabel(chart.unit)
    axes.set_ylim(0, max((v for row in chart.values for v in row if not math.isnan(v)),
                         default=1.0) * 1.25 or 1.0)
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    if count > 1:
        axes.legend(frameon=False, fontsize=8)


def draw(chart: Chart, path: Path, note: str = "") -> None:
    """Writes ``chart`` as a PNG at ``path``."""
    figure = Figure(figsize=(7.2, 3.8), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    _bars(axes, chart)
    axes.set_title(chart.title, fontsize=11, loc="left")
    figure.supxlabel(f"{chart.better} is better" + (f"  ·  {note}" if note else ""),
                     x=0.99, ha="right", fontsize=7, color="#6b7385")
    figure.savefig(path, metadata={"Software": None})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", nargs="*", type=Path,
                        help=f"results files (default: {RESULTS.relative_to(ROOT)}/loadgen*.json)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"where to write the PNGs (default: {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    paths = args.results or sorted(RESULTS.glob("loadgen*.json"))  # not the other tools' files
    if not paths:
        print(f"bench.plot: no results in {RESULTS}: run python -m bench.loadgen first",
              file=sys.stderr)
        return 1
    try:
        results = load(paths)
    except (OSError, ResultsError) as exc:
        print(f"bench.plot: {exc}", file=sys.stderr)
        return 1
    drawn = charts(results)
    if not drawn:
        print("bench.plot: the results hold none of the figures the charts show",
              file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    note = results.notes[-1] if results.notes else ""
    for chart in drawn:
        draw(chart, args.out / chart.file, note)
        print(args.out / chart.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
