"""One ``/metrics`` for a host of several workers: every family once, with the samples named
after it, each worker's samples under its ``worker`` label, and the supervisor's own process
series without one. Checked with ``prometheus_client``'s parser and, where it is installed,
with Prometheus' own ``promtool check metrics``."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

from conftest import GENERAL, JANE, JOHN, StartProcess, client_factory, metric_value
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families
from test_workers import metrics, on_worker, start

from gogate.cluster.metrics import HostMetrics
from gogate.devbackend import DevBackend
from gogate.metrics import encode_families

# The samples a family of each type may have, by suffix of the family's name.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "info": ("_info",), "unknown": ("",),
            "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
TYPE_LINE = re.compile(r"# TYPE (\S+) (\S+)$")


def families_in(text: str) -> dict[str, list[str]]:
    """``# TYPE`` name → the names of the samples written under it."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if match := TYPE_LINE.match(line):
            assert match[1] not in found, f"{match[1]} has two TYPE lines"
            current = found[match[1]] = []
        elif line and not line.startswith("#"):
            assert current is not None, f"sample before any TYPE: {line}"
            current.append(re.split(r"[{ ]", line, maxsplit=1)[0])
    return found


def assert_well_formed(text: str) -> None:
    """Each TYPE line names a family whose samples follow it, named after it; the parser
    reads the whole text."""
    kinds = {m[1]: m[2] for line in text.splitlines() if (m := TYPE_LINE.match(line))}
    for name, samples in families_in(text).items():
        assert samples, f"TYPE {name} has no sample"
        kind = kinds[name]
        if kind in ("counter", "info"):  # the TYPE line names the sample itself
            assert name.endswith(SUFFIXES[kind][0]), (name, kind)
            allowed = {name}
        else:
            allowed = {name + suffix for suffix in SUFFIXES.get(kind, ("",))}
        assert set(samples) <= allowed, (name, kind, sorted(set(samples) - allowed))
    assert list(text_string_to_metric_families(text))


async def test_metrics_of_two_workers_are_proper_families(
        gateway_process: StartProcess, backend: DevBackend, tokens: dict[int, str]) -> None:
    proc = await start(gateway_process, backend, 2)
    async with client_factory(proc.port) as connect:
        john = await on_worker(connect, 0, tokens[JOHN])
        jane = await on_worker(connect, 1, tokens[JANE])
        await john.send("send_message", {"chat_id": GENERAL, "text": "counted"})
        await jane.expect("new_message")
        await jane.send("typing", {"chat_id": GENERAL, "is_typing": True})
        while (await john.recv())["event"] != "user_typing":  # after its ack and message
            pass
        text = await metrics(proc)

    assert_well_formed(text)
    assert metric_value(text, "gogate_events_in_total", event="send_message", worker="0") == 1
    assert metric_value(text, "gogate_events_in_total", event="typing", worker="1") == 1
    for worker in ("0", "1"):
        assert metric_value(text, "gogate_events_out_total", event="new_message",
                            worker=worker) >= 1, worker
        assert metric_value(text, "process_cpu_seconds_total", worker=worker) > 0, worker
        assert metric_value(text, "gogate_broker_messages_total", direction="out",
                            worker=worker) >= 1, worker
    assert metric_value(text, "process_cpu_seconds_total") > 0, "the supervisor's own"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    builds = [s.labels for s in families["gogate_build_info"].samples]
    assert {b.get("worker") for b in builds} == {None, "0", "1"}
    assert all(b["version"] and b["implementation"] in ("compiled", "pure") for b in builds)

    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not installed (Debian: apt-get install prometheus): not checked by it")
        return
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30, check=False)
    assert check.returncode == 0 and not check.stdout.strip(), (
        check.stdout.decode() + check.stderr.decode())


def test_worker_families_merge_by_name_and_carry_nan() -> None:
    worker = CollectorRegistry()
    Gauge("gogate_ratio", "A gauge that has no value yet.", registry=worker).set(math.nan)
    Counter("gogate_things", "Things counted.", ["kind"], registry=worker).labels("a").inc(2)
    Counter("gogate_never", "A labelled counter never bumped.", ["kind"], registry=worker)
    host = HostMetrics(2, lambda: 2)
    host.restarts.inc()

    text = host.render({0: encode_families(worker), 1: encode_families(worker), 2: b"\xc1"})
    assert_well_formed(text.decode())
    lines = text.decode().splitlines()
    assert 'gogate_ratio{worker="0"} NaN' in lines
    assert 'gogate_things_total{kind="a",worker="1"} 2.0' in lines
    assert "gogate_worker_restarts_total 1.0" in lines
    assert "gogate_never" not in text.decode()
    assert lines.count("# TYPE gogate_things_total counter") == 1
