"""Autobahn|Testsuite conformance of gogate's ``/ws``, judged as a server that does not echo.

Run with ``make autobahn`` (``make test`` runs it too), or ``python -m tests.autobahn.run``
from the repository root (``--pure`` for the pure-Python hot path). It starts the development
backend and a real gateway process (``python -m gogate``, started as the benchmarks start it),
points Autobahn|Testsuite's ``fuzzingclient`` at ``ws://127.0.0.1:<port>/ws``, prints a table
of verdicts by case group and exits 1 when any case fails the rules below. The HTML and JSON
reports stay in ``.venv-autobahn/reports/``.

Set-up: wstest runs only on Python 2.7. The first run finds one (``AUTOBAHN_PYTHON2``, else
``python2.7`` on the PATH, else pyenv's ``versions/2.7*``), installs ``virtualenv`` for it
into ``.venv-autobahn/virtualenv/``, creates ``.venv-autobahn/env/`` and installs the pinned
``tests/autobahn/requirements.txt`` there (about 90 s with an empty pip cache, 30 s with a
warm one); later runs reuse it until the requirements change. Without Python 2.7 it stops
with a one-line instruction.

Cases: groups 1 (framing), 2 (pings and pongs), 3 (reserved bits), 4 (opcodes),
5 (fragmentation), 6 (UTF-8), 7 (closing), 9 (limits; the gateway refuses messages above
``MAX_MESSAGE_SIZE`` early, so the whole group takes a few seconds) and 10 (automatic
fragmentation): 301 cases, none excluded. Groups 12 and 13 test permessage-deflate, which the
gateway does not negotiate. Many cases wait up to 10 s for an echo that never comes, so the
cases run in four wstest processes at once: about 35 s for the whole suite.

The gateway runs with the benchmark settings (loopback, no rate limit), ``MAX_MESSAGE_SIZE``
at its default of 512000 bytes, and ``AUTH_TIMEOUT`` raised to 60 s: no Autobahn client
authenticates, and cases that wait 10 s for an echo must not be cut by the authentication
deadline (1008), which they do not test.

Judging rules. The gateway answers text that is not a valid event with an ``error`` event
and never echoes, so Autobahn's own verdict ("OK", "NON-STRICT", "INFORMATIONAL" pass;
"FAILED", "WRONG CODE", "UNCLEAN" do not) is taken as it stands except where it only reflects
the missing echo or the gateway's documented refusals:

1. A case passes (*conformant*) when Autobahn passes both its behaviour and its close.
2. A case fails when the client saw an opening or closing handshake time out or the
   gateway not drop the connection (a hang), whatever else happened.
3. Everything the gateway sends as data must be a text ``error`` event, at most one per
   message that an echo server would have sent back (so nothing after a protocol error), and
   its pongs must be the ones Autobahn expected; anything else fails the case.
4. A case passes as *answered* when Autobahn passes the close and faults only the behaviour
   (the error events instead of the echo).
5. A case passes as *refused* when Autobahn expected the client's messages to be accepted
   and a normal close, and the gateway instead closed the connection itself, cleanly, with
   1003 after a binary message or 1009 after a message above ``MAX_MESSAGE_SIZE``.
6. A case listed in ``judge.KNOWN_DEVIATIONS`` (a behaviour of the WebSocket library, with
   its reason) is reported as *known* when it closes cleanly with exactly the listed code.
7. Every other case fails: in particular a wrong close code where Autobahn demands 1002
   (protocol errors, invalid close codes) or 1007 (invalid UTF-8), an unclean close where a
   clean one is required, or the connection closed by the wrong side.

The run also fails when a case has no report (a wstest process hung or died), when a wstest
process exits non-zero, or when the gateway exits or logs a traceback during the run.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import start_backend, start_gateway
from tests.autobahn.judge import judge, load_reports, summarise

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
HOME = ROOT / ".venv-autobahn"
ENV = HOME / "env"
WSTEST = ENV / "bin" / "wstest"
REPORTS = HOME / "reports"
VIRTUALENV = "virtualenv==20.15.1"  # the last release that runs on Python 2.7

MAX_MESSAGE_SIZE = 512_000
GROUPS = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*")
EXPECTED_CASES = 301  # in GROUPS, with autobahntestsuite 25.10.1
# The slow cases (those waiting for an echo) spread over parallel wstest processes; the last
# process runs every case of GROUPS that none of these names.
SHARDS = (
    ("1.1.6", "1.1.7", "6.4.*", "2.*", "3.*", "4.*", "7.*"),
    ("1.1.8", "10.*", "6.1.*", "6.2.*", "6.3.*", "9.*"),
    ("6.22.*", "6.23.*", "6.5.*", "6.6.*"),
)
SHARD_TIMEOUT = 300.0  # seconds; a wstest process still running then has hung

PYTHON2_MISSING = ("autobahn: Autobahn|Testsuite needs Python 2.7: install it "
                   "(`pyenv install 2.7.18`) or set AUTOBAHN_PYTHON2=/path/to/python2.7")


def find_python2() -> str | None:
    """A Python 2.7 interpreter: ``AUTOBAHN_PYTHON2``, ``python2.7`` on the PATH (a pyenv shim
    that points nowhere does not count), or the newest of pyenv's 2.7 versions."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [os.environ.get("AUTOBAHN_PYTHON2", ""), shutil.which("python2.7") or ""]
    candidates += sorted(glob.glob(str(pyenv_root / "versions/2.7*/bin/python2.7")),
                         key=lambda path: [int(p) for p in path.split("/")[-3].split(".")
                                           if p.isdigit()], reverse=True)
    for candidate in filter(None, candidates):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (2, 7))"],
                capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return candidate
    return None


def _step(what: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"autobahn: {what} failed (exit {done.returncode})")


def ensure_wstest(python2: str) -> Path:
    """wstest in ``.venv-autobahn/env``, installed from the pinned requirements when the
    environment is missing or was built from other requirements."""
    fingerprint = hashlib.sha256(REQUIREMENTS.read_bytes() + python2.encode()).hexdigest()
    stamp = HOME / ".installed"
    if WSTEST.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return WSTEST
    print(f"autobahn: installing Autobahn|Testsuite for {python2} into {HOME.name}/",
          flush=True)
    shutil.rmtree(HOME, ignore_errors=True)
    quiet = ["--quiet", "--disable-pip-version-check", "--no-warn-script-location"]
    bootstrap = HOME / "virtualenv"
    _step("installing virtualenv for Python 2.7",
          [python2, "-m", "pip", "install", *quiet, "--target", str(bootstrap), VIRTUALENV])
    _step("creating the Python 2.7 environment",
          [python2, "-m", "virtualenv", "--quiet", str(ENV)],
          env={**os.environ, "PYTHONPATH": str(bootstrap)})
    _step("installing Autobahn|Testsuite",
          [str(ENV / "bin" / "python"), "-m", "pip", "install", *quiet,
           "-r", str(REQUIREMENTS)])
    stamp.write_text(fingerprint)
    return WSTEST


def _spec(url: str, outdir: Path, cases: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    return json.dumps({
        "outdir": str(outdir),
        "servers": [{"agent": "gogate", "url": url}],
        "cases": list(cases),
        "exclude-cases": list(exclude),
        "exclude-agent-cases": {},
    })


def run_cases(wstest: Path, url: str) -> tuple[list[Path], list[str]]:
    """Every case of GROUPS in parallel wstest processes; returns their report directories
    and what went wrong with the processes themselves."""
    shutil.rmtree(REPORTS, ignore_errors=True)
    named = tuple(pattern for shard in SHARDS for pattern in shard)
    plans = [(shard, ()) for shard in SHARDS] + [(GROUPS, named)]
    running: list[tuple[Path, subprocess.Popen[bytes]]] = []
    for number, (cases, exclude) in enumerate(plans, 1):
        outdir = REPORTS / f"part{number}"
        outdir.mkdir(parents=True)
        spec = outdir / "spec.json"
        spec.write_text(_spec(url, outdir, cases, exclude))
        with (outdir / "wstest.log").open("wb") as log:
            running.append((outdir, subprocess.Popen(
                [str(wstest), "--mode", "fuzzingclient", "--spec", str(spec)],
                cwd=outdir, stdout=log, stderr=subprocess.STDOUT)))
    problems: list[str] = []
    deadline = time.monotonic() + SHARD_TIMEOUT
    for outdir, proc in running:
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problems.append(f"wstest in {outdir.name} still ran after {SHARD_TIMEOUT:g} s")
            continue
        if code != 0:
            tail = (outdir / "wstest.log").read_text(errors="replace")[-2000:]
            problems.append(f"wstest in {outdir.name} exited {code}:\n{tail}")
    return [outdir for outdir, _ in running], problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pure", action="store_true",
                        help="run the gateway on the pure-Python hot path")
    args = parser.parse_args(argv)

    python2 = find_python2()
    if python2 is None:
        print(PYTHON2_MISSING, file=sys.stderr)
        return 2
    wstest = ensure_wstest(python2)

    started = time.monotonic()
    backend = start_backend()
    try:
        gateway = start_gateway(f"http://127.0.0.1:{backend.port}", pure=args.pure, env={
            "MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE), "AUTH_TIMEOUT": "60"})
        try:
            directories, problems = run_cases(wstest, f"ws://127.0.0.1:{gateway.port}/ws")
            log = gateway.output()  # read before stop() removes the file
            if gateway.proc.poll() is not None:
                problems.append(f"the gateway exited during the run:\n{log[-4000:]}")
            elif "Traceback" in log:
                problems.append(f"the gateway logged a traceback:\n{log[-4000:]}")
        finally:
            gateway.stop()
    finally:
        backend.stop()
    elapsed = time.monotonic() - started

    reports = load_reports(directories)
    verdicts = [judge(case, report, MAX_MESSAGE_SIZE) for case, report in reports.items()]
    table, failures = summarise(verdicts)
    implementation = "pure" if args.pure else "compiled"
    print(f"Autobahn|Testsuite fuzzingclient against gogate /ws ({implementation} hot path), "
          f"groups {' '.join(g.removesuffix('.*') for g in GROUPS)}, {elapsed:.0f} s "
          f"(the seconds column adds up each case's own time; the cases run 4 at a time)")
    print(table)
    if len(verdicts) < EXPECTED_CASES:
        problems.append(f"{EXPECTED_CASES - len(verdicts)} of {EXPECTED_CASES} cases "
                        "have no report")
    for problem in problems:
        print(f"autobahn: {problem}", file=sys.stderr)
    meaningful = failures + len(problems)
    print(f"autobahn: {len(verdicts)} cases, {meaningful} meaningful failures; "
          f"reports in {REPORTS.relative_to(ROOT)}/")
    return 1 if meaningful else 0


if __name__ == "__main__":
    sys.exit(main())
