"""Fuzzing the frame and event layer over real sockets (hypothesis).

One gateway process (``python -m gogate``, the installed package, with the development backend
as another process) takes every input of this module. Each input opens a fresh WebSocket,
sends whatever hypothesis made of it, then a probe event, and the properties are:

- every input is answered: by the ``error`` (or ``ack``, ``auth_success``, broadcast) it
  deserves, by a pong for a ping, or by a close frame with the code the protocol gives it
  (1002, 1003, 1007, 1008, 1009, or 1000 / the client's own code for a client's close) within
  a few seconds; a connection that must stay open answers the probe;
- every ``error`` is well-formed: a documented code (never INTERNAL_ERROR), a message that
  reveals no address or stack trace, and the event's ref copied when it had a valid one;
- the gateway's log holds no traceback, no ERROR record and no line that is not its own JSON;
- after all inputs, the gateway's open file descriptors and RSS are back to what they were
  after a warm-up (see :func:`test_gateway_resources_are_back_to_baseline` for the margins).

The frames and what the gateway must answer to them are in ``fuzzmodel.py``.

How many inputs: the ``ci`` profile (the default) sends 2,400 inputs (connections, each with one
to five frames or events) in about half a minute; ``GOGATE_FUZZ_PROFILE=long`` (``make fuzz``)
sends 120,000. A failure prints
the falsifying input and a ``@reproduce_failure`` blob. ``GOGATE_NO_EXTENSIONS=1`` fuzzes the
gateway with its pure-Python hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import uvloop
from fuzzmodel import (
    ANSWER_EVENTS,
    ERROR_CODES,
    LEAKS,
    PING,
    PONG,
    PROBE,
    PROBE_REF,
    TEXT,
    Frame,
    event_texts,
    expect,
    frame_sequences,
    may_stay_silent,
    valid_ref,
    with_tokens,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawws import Closed, RawClient

from bench.procs import (
    KEY,
    GatewayProcess,
    Service,
    child_env,
    free_port,
    launch_gateway,
    rss_bytes,
    start_backend,
)
from bench.soak import FdCount, gateway_fds
from gogate.config import FIELDS

LIMIT = 8192  # MAX_MESSAGE_SIZE of the fuzzed gateway: oversized inputs stay cheap to send
ANSWER_WITHIN = 5.0  # seconds every input has to be answered in (backend calls included)
USERS = (1, 2, 3, 4)  # the development backend's demo users

# --- how many inputs ------------------------------------------------------------------------

_COMMON: dict[str, Any] = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example]}
settings.register_profile("ci", max_examples=100, **_COMMON)  # x the weights below: 2,400
settings.register_profile("long", max_examples=5_000, **_COMMON)  # 120,000
PROFILE = settings.get_profile(os.environ.get("GOGATE_FUZZ_PROFILE", "ci"))


def budget(weight: int) -> settings:
    """This test's share of the profile's inputs."""
    return settings(PROFILE, max_examples=PROFILE.max_examples * weight)


# --- the gateway under fuzz -----------------------------------------------------------------


@dataclass
class Fuzzed:
    """The gateway process, the loop the clients run on, and what was counted meanwhile."""

    gateway: GatewayProcess
    backend: Service
    runner: asyncio.Runner
    tokens: dict[int, str]
    log_offset: int = 0
    baseline_fds: FdCount = field(default_factory=lambda: FdCount(0, 0, 0))
    baseline_rss: int = 0
    inputs: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.gateway.port

    def fds(self) -> FdCount:
        return gateway_fds(self.gateway.pid, self.gateway.port, self.backend.port)

    def rss(self) -> int:
        return rss_bytes(self.gateway.pid)

    def run(self, work: Any) -> Any:
        return self.runner.run(work)

    def count(self, kind: str) -> None:
        self.inputs[kind] = self.inputs.get(kind, 0) + 1

    def new_log_problems(self) -> list[str]:
        """Lines the gateway logged since the last call that show a fault: a traceback, an
        ERROR record, or anything that is not one of its JSON records."""
        with self.gateway.log_path.open("rb") as log:
            log.seek(self.log_offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self.log_offset += end
        return [line for line in chunk[:end].decode(errors="replace").splitlines()
                if _log_problem(line)]


# picows reports each client's protocol violation as an ERROR record of its own
# ("WS parser error: ... initiate disconnect"): a fault of the client, answered with the right
# close code, so not counted as a fault of the gateway here.
_CLIENT_FAULT = "WS parser error: "


def _log_problem(line: str) -> bool:
    if not line.strip():
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return True
    if not isinstance(record, dict) or "exc" in record or "Traceback" in line:
        return True
    return record.get("level") in ("error", "critical") and not (
        str(record.get("logger", "")).startswith("picows")
        and str(record.get("msg", "")).startswith(_CLIENT_FAULT))


def _mint(backend: Service, user_id: int) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{backend.port}/api/dev/tokens", method="POST",
        data=json.dumps({"user_id": user_id, "ttl": 86400}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        token: str = json.loads(response.read())["token"]
    return token


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    workdir = tmp_path_factory.mktemp("fuzz")
    backend = start_backend()
    settings_env = {
        "HOST": "127.0.0.1", "PORT": str(free_port()), "INTERNAL_PORT": str(free_port()),
        "BACKEND_API_URL": f"http://127.0.0.1:{backend.port}", "INTERNAL_API_KEY": KEY,
        "MAX_MESSAGE_SIZE": str(LIMIT), "LOG_FORMAT": "json", "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("GOGATE_NO_EXTENSIONS"):
        settings_env["GOGATE_NO_EXTENSIONS"] = "1"
    gateway = launch_gateway(child_env(settings_env, drop={f.env for f in FIELDS}),
                             cwd=workdir, log=workdir / "gateway.log")
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    fuzz = Fuzzed(gateway, backend, runner, {uid: _mint(backend, uid) for uid in USERS})
    try:
        # Warm-up: every path once (auth cache, member lists, backend pool, first errors),
        # so that the baseline is what a gateway that has seen traffic holds.
        for index in range(20):
            fuzz.run(_warm_up(fuzz, USERS[index % len(USERS)]))
        time.sleep(0.5)
        fuzz.baseline_fds, fuzz.baseline_rss = fuzz.fds(), fuzz.rss()
        fuzz.new_log_problems()  # the startup lines (a warning about origins) are not faults
        yield fuzz
    finally:
        runner.close()
        gateway.kill()
        backend.stop()


async def _warm_up(fuzz: Fuzzed, user: int) -> None:
    raw = await RawClient.open(fuzz.port)
    try:
        await raw.auth(fuzz.tokens[user])
        for event, data in (("typing", {"chat_id": 1, "is_typing": True}),
                            ("send_message", {"chat_id": 1, "text": "warm-up"}),
                            ("mark_read", {"message_ids": [1]}),
                            ("add_reaction", {"message_id": 1, "emoji": "👍"})):
            raw.send_event(event, data, ref="warm")
        raw.send(Frame(TEXT, PROBE).encode())
        while (await raw.recv(ANSWER_WITHIN)).get("ref") != PROBE_REF:
            pass
        await asyncio.sleep(0.05)
    finally:
        raw.close()


# --- one exchange ---------------------------------------------------------------------------


@dataclass
class Exchange:
    """What the gateway sent on one fuzz connection: its text events and pongs, in order, and
    how the connection ended (``closed``: the close code, None for an end without a close
    frame; ``open``: the probe was answered and the connection was still up)."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    open: bool = False
    closed: bool = False
    code: int | None = None

    @property
    def answers(self) -> list[dict[str, Any]]:
        """Every event but the probe's answer."""
        return [e for e in self.events if e.get("ref") != PROBE_REF]

    @property
    def probe_answered(self) -> bool:
        return any(e.get("ref") == PROBE_REF for e in self.events)


async def exchange(port: int, payload: bytes, token: str | None, done: Any) -> Exchange:
    """Open a connection (authenticated with ``token``), send ``payload`` and the probe, and
    read until ``done(exchange)`` holds, the server closes, or the time is up."""
    raw = await RawClient.open(port)
    result = Exchange()
    try:
        if token is not None:
            await raw.auth(token)
        raw.send(payload, Frame(TEXT, PROBE).encode())

        async def read() -> None:
            while not done(result):
                try:
                    _, opcode, body = await raw.read_frame()
                except Closed as closed:
                    result.closed, result.code = True, closed.code
                    return
                result.frames.append((opcode, body))
                if opcode == TEXT:
                    event = json.loads(body)
                    assert isinstance(event, dict), body[:200]
                    result.events.append(event)
                else:
                    assert opcode in (PING, PONG), (opcode, body[:200])
            result.open = True

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), ANSWER_WITHIN)
        return result
    finally:
        raw.close()


def check_event(event: dict[str, Any], refs: list[Any]) -> None:
    """A well-formed answer: a known event; an error with a documented code and a message
    that gives nothing away; a ref only when one of ``refs`` (what was sent) is it."""
    assert event.get("event") in ANSWER_EVENTS, event
    assert isinstance(event.get("data"), dict), event
    if "ref" in event:
        assert any(type(event["ref"]) is type(r) and event["ref"] == r for r in refs), \
            (event, refs)
    if event["event"] == "error":
        data = event["data"]
        assert set(data) == {"message", "code"}, event
        assert data["code"] in ERROR_CODES, event
        assert isinstance(data["message"], str) and data["message"], event
        assert not any(leak in data["message"] for leak in LEAKS), event


def tally(result: Exchange) -> None:
    """What the gateway answered, for ``--hypothesis-show-statistics``."""
    for answer in result.answers:
        hypothesis.event(f"{answer['event']} {answer['data'].get('code', '')}".strip())
    if result.closed:
        hypothesis.event(f"closed {result.code}")


def no_new_log_problems(fuzz: Fuzzed, what: Any) -> None:
    problems = fuzz.new_log_problems()
    assert not problems, f"the gateway logged a fault after {what!r}:\n" + "\n".join(
        problems[:20])


# --- the properties -------------------------------------------------------------------------


@budget(10)
@given(sequence=frame_sequences(LIMIT), authenticated=st.booleans(),
       user=st.sampled_from(USERS))
def test_any_frames_are_answered_or_closed_with_the_protocol_code(
        fuzzed: Fuzzed, sequence: list[Frame], authenticated: bool, user: int) -> None:
    wanted = expect(sequence, LIMIT)
    payload = b"".join(f.encode() for f in sequence)
    fuzzed.count("frame sequences")

    def done(result: Exchange) -> bool:
        return result.probe_answered

    result: Exchange = fuzzed.run(exchange(
        fuzzed.port, payload, fuzzed.tokens[user] if authenticated else None, done))
    # Pongs are written at once, events at the end of the loop's turn: each kind is in order,
    # but a pong may overtake an error.
    pongs = [body for opcode, body in result.frames if opcode == PONG]
    errors = [e for e in result.events if e.get("ref") != PROBE_REF]
    wanted_pongs = [a[1] for a in wanted.answers if a[0] == "pong"]
    wanted_errors = sum(a[0] == "error" for a in wanted.answers)
    if wanted.close is None:
        assert result.open, f"no answer to the probe: {result}"
        assert (pongs, len(errors)) == (wanted_pongs, wanted_errors), result
    else:
        assert result.closed, f"not closed within {ANSWER_WITHIN} s (wanted {wanted}): {result}"
        assert result.code is not None, \
            f"the connection ended without a close frame (wanted {set(wanted.close)})"
        assert result.code in wanted.close, f"closed {result.code}, wanted {set(wanted.close)}"
        # The answers to the frames read last may be missing: see fuzzmodel.expect.
        assert pongs == wanted_pongs[:len(pongs)] and len(errors) <= wanted_errors, result
    for event in result.events:
        check_event(event, [PROBE_REF])
        assert event["event"] == "error", event
    tally(result)
    no_new_log_problems(fuzzed, sequence)


@budget(5)
@given(inputs=st.lists(event_texts(), min_size=1, max_size=4))
def test_events_before_auth_get_one_answer_each(fuzzed: Fuzzed,
                                                inputs: list[tuple[Any, str]]) -> None:
    # Before auth no token is real: every input gets exactly one answer (AUTH_REQUIRED,
    # AUTH_FAILED or a decoding error), or the third refused token closes the connection.
    texts = [with_tokens(text, "not-a-token", "eyJ0eXAiOiJKV1QifQ.e30.c2ln") for _, text in inputs]
    encoded = [t.encode() for t in texts]
    fuzzed.count("events before auth")
    refs = [PROBE_REF, *(obj["ref"] for obj, _ in inputs
                         if isinstance(obj, dict) and valid_ref(obj.get("ref")))]

    def done(result: Exchange) -> bool:
        return result.probe_answered and len(result.answers) >= len(inputs)

    result: Exchange = fuzzed.run(exchange(
        fuzzed.port, b"".join(Frame(TEXT, e).encode() for e in encoded), None, done))
    for event in result.events:
        check_event(event, refs)
        assert event["event"] == "error", event
    failed_auth = sum(e["data"]["code"] == "AUTH_FAILED" for e in result.answers)
    if result.closed:
        assert result.code in (1008, 1009), result
        if result.code == 1008:
            assert failed_auth == 3, result
        else:
            assert any(len(e) > LIMIT for e in encoded), result
        assert len(result.answers) <= len(inputs), result
    else:
        assert result.open, f"not answered within {ANSWER_WITHIN} s: {result}"
        assert len(result.answers) == len(inputs), result
        assert all(len(e) <= LIMIT for e in encoded), result
    tally(result)
    no_new_log_problems(fuzzed, texts)


@budget(9)
@given(sent=event_texts(), user=st.sampled_from(USERS), other=st.sampled_from(USERS))
def test_events_after_auth_are_answered(fuzzed: Fuzzed, sent: tuple[Any, str], user: int,
                                        other: int) -> None:
    obj, text = sent
    text = with_tokens(text, fuzzed.tokens[user], fuzzed.tokens[other])
    encoded = text.encode()
    fuzzed.count("events after auth")
    ref = obj.get("ref") if isinstance(obj, dict) else None
    silent_ok = may_stay_silent(obj)

    def done(result: Exchange) -> bool:
        return result.probe_answered and (silent_ok or bool(result.answers))

    result: Exchange = fuzzed.run(exchange(
        fuzzed.port, Frame(TEXT, encoded).encode(), fuzzed.tokens[user], done))
    if len(encoded) > LIMIT:
        assert result.closed and result.code == 1009, result
    else:
        assert result.open, f"not answered within {ANSWER_WITHIN} s: {result}"
    refs = [PROBE_REF, ref] if valid_ref(ref) else [PROBE_REF]
    for event in result.events:
        check_event(event, refs)
    for event in result.answers:
        if event["event"] == "ack":
            assert valid_ref(ref) and event.get("ref") == ref, (event, ref)
        if event["event"] == "error" and event["data"]["code"] != "INVALID_JSON" \
                and valid_ref(ref) and obj is not None:
            assert event.get("ref") == ref, (event, ref)
    tally(result)
    no_new_log_problems(fuzzed, text)


def test_gateway_resources_are_back_to_baseline(fuzzed: Fuzzed) -> None:
    """After every fuzz connection is gone: no client socket is left, and the gateway's other
    descriptors (leaving out its pooled keep-alive sockets to the backend, which it keeps on
    purpose) are no more than after the warm-up. RSS is within 10 % + 4 MiB of the warm-up's:
    CPython's allocator keeps freed arenas, and the member-list and validation caches fill up
    to their bounds; a leak of 1 KB per input of the long profile would be ten times that."""
    deadline = time.monotonic() + 10
    baseline = fuzzed.baseline_fds
    while time.monotonic() < deadline:
        fds = fuzzed.fds()
        if fds.clients == 0 and fds.own <= baseline.own:
            break
        time.sleep(0.1)
    rss = fuzzed.rss()
    print(f"\nfuzz inputs: {fuzzed.inputs}; fds {baseline} -> {fds}; "
          f"RSS {fuzzed.baseline_rss / 2**20:.1f} -> {rss / 2**20:.1f} MiB")
    assert fds.clients == 0, fds
    assert fds.own <= baseline.own, (baseline, fds)
    assert rss <= fuzzed.baseline_rss * 1.10 + 4 * 2**20, (fuzzed.baseline_rss, rss)
    assert fuzzed.gateway.proc.poll() is None, "the gateway exited"
    no_new_log_problems(fuzzed, "the end")
