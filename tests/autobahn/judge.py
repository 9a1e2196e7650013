"""Verdicts on Autobahn|Testsuite's fuzzingclient reports, for a server that does not echo.

The rules are written out in ``tests/autobahn/run.py``; this module applies them to the JSON
that wstest writes (an ``index.json`` per run and one file per case) and prints the table.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "KNOWN_DEVIATIONS",
    "Message",
    "Verdict",
    "client_messages",
    "judge",
    "load_reports",
    "summarise",
]

# Autobahn's own verdicts that mean "as the RFC wants it".
_PASSING = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})

# Verdict kinds, in the order of the table's columns.
CONFORMANT = "conformant"  # Autobahn's verdict is a pass as it stands
ANSWERED = "answered"  # an echo was expected; gogate answered with `error` events instead
REFUSED = "refused"  # a binary (1003) or oversized (1009) message refused, as documented
KNOWN = "known"  # a listed deviation of the WebSocket library, with its reason
FAILED = "FAILED"
KINDS = (CONFORMANT, ANSWERED, REFUSED, KNOWN, FAILED)

# Cases where the WebSocket library (picows) itself answers differently from the RFC, with
# the close code it sends. A case listed here still fails if it does anything else.
KNOWN_DEVIATIONS: dict[str, tuple[int, str]] = {
    "7.1.2": (1002, "picows 2.3.1 reads one frame ahead: a second CLOSE arriving in the same "
                    "read as the first is failed with 1002 before the gateway sees the first"),
}

_TIMEOUT_FLAGS = {
    "wasOpenHandshakeTimeout": "the opening handshake timed out",
    "wasCloseHandshakeTimeout": "the gateway did not finish the closing handshake in time",
    "wasServerConnectionDropTimeout": "the gateway did not drop the TCP connection in time",
}

# Performance cases (group 9) switch the wire log off; their descriptions give the messages:
# "Send binary message message with payload of length 4 * 2**20 (4M)", "Send 1000 text
# messages of payload size 4096 ...".
_ONE_MESSAGE = re.compile(
    r"(text|binary) message message with (?:message )?payload of length (\d+)(?: \* 2\*\*(\d+))?")
_MANY_MESSAGES = re.compile(r"(\d+) (text|binary) messages of payload size (\d+)")

_TRUNCATED = " ..."
_ERROR_EVENT_START = re.compile(r'\{\s*"event"\s*:\s*"error"')

_OPCODE_CONTINUATION, _OPCODE_TEXT, _OPCODE_BINARY = 0, 1, 2


@dataclass(frozen=True)
class Message:
    """One data message the test client sent: its type and its whole payload size."""

    binary: bool
    size: int


@dataclass(frozen=True)
class Verdict:
    case: str
    kind: str
    detail: str
    seconds: float

    @property
    def group(self) -> str:
        return self.case.split(".", 1)[0]


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def load_reports(directories: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Every case report found under ``directories`` (one wstest run each), by case id, with
    the run's duration (ms) from its index."""
    reports: dict[str, dict[str, Any]] = {}
    for directory in directories:
        index_path = directory / "index.json"
        if not index_path.exists():
            continue
        for agent_cases in json.loads(index_path.read_text()).values():
            for case, entry in agent_cases.items():
                report = json.loads((directory / entry["reportfile"]).read_text())
                report["duration"] = entry["duration"]
                reports[case] = report
    return reports


def client_messages(report: Mapping[str, Any]) -> list[Message]:
    """The data messages the test client sent, from the wire log, else from the description
    (performance cases do not log their frames)."""
    messages: list[Message] = []
    current: Message | None = None
    for entry in report.get("wirelog") or ():
        if entry[0] != "TF":
            continue
        size, opcode, fin = int(entry[1][0]), entry[2], bool(entry[3])
        if opcode in (_OPCODE_TEXT, _OPCODE_BINARY):
            current = Message(opcode == _OPCODE_BINARY, size)
        elif opcode == _OPCODE_CONTINUATION and current is not None:
            current = Message(current.binary, current.size + size)
        else:
            continue  # control frames
        if fin:
            messages.append(current)
            current = None
    if current is not None:
        messages.append(current)  # a message the client never finished
    if messages:
        return messages
    description = report.get("description", "")
    if match := _ONE_MESSAGE.search(description):
        size = int(match[2]) * (2 ** int(match[3]) if match[3] else 1)
        return [Message(match[1] == "binary", size)]
    if match := _MANY_MESSAGES.search(description):
        return [Message(match[2] == "binary", int(match[3]))] * int(match[1])
    return []


def _is_error_event(payload: str) -> bool:
    """Whether a text message the gateway sent is an ``error`` event (reports keep the first
    64 characters of a longer message, followed by " ...")."""
    if payload.endswith(_TRUNCATED):
        return _ERROR_EVENT_START.match(payload) is not None
    try:
        event = json.loads(payload)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("event") == "error"


def _answer_problem(report: Mapping[str, Any]) -> str | None:
    """Why what the gateway sent is not acceptable, or ``None``: data messages must be text
    ``error`` events, at most one per message an echo server would have sent back, and the
    pongs (and the client's own timeout marks) must be those Autobahn expected."""
    received = report.get("received") or []
    answers = [item for item in received if item[0] == "message"]
    others = [item for item in received if item[0] != "message"]
    for item in answers:
        payload, binary = item[1], bool(item[2])
        if binary:
            return "the gateway sent a binary message"
        if not _is_error_event(payload):
            return f"the gateway sent something other than an error event: {payload[:60]!r}"
    alternatives = list((report.get("expected") or {}).values()) or [[]]
    most = max(sum(1 for item in alt if item[0] == "message") for alt in alternatives)
    if len(answers) > most:
        return (f"the gateway answered {len(answers)} messages where at most {most} "
                f"should have been processed")
    if not any(others == [item for item in alt if item[0] != "message"]
               for alt in alternatives):
        return f"control frames differ from Autobahn's expectation: {others!r:.120}"
    return None


def judge(case: str, report: Mapping[str, Any], max_message_size: int) -> Verdict:
    """The verdict on one case under the rules of ``tests/autobahn/run.py``."""
    seconds = float(report.get("duration", 0)) / 1000

    def verdict(kind: str, detail: str) -> Verdict:
        return Verdict(case, kind, detail, seconds)

    for flag, what in _TIMEOUT_FLAGS.items():
        if report.get(flag):
            return verdict(FAILED, what)
    behavior, behavior_close = report["behavior"], report["behaviorClose"]
    if behavior in _PASSING and behavior_close in _PASSING:
        return verdict(CONFORMANT, behavior)
    code = report.get("remoteCloseCode")
    reason = report.get("remoteCloseReason") or ""
    clean, by_client = bool(report.get("wasClean")), bool(report.get("closedByMe"))
    closed = f"closed {code} {reason!r}" if code is not None else "no close frame"
    known = KNOWN_DEVIATIONS.get(case)
    if known is not None and code == known[0] and clean:
        return verdict(KNOWN, known[1])
    problem = _answer_problem(report)
    if problem is not None:
        return verdict(FAILED, problem)
    if behavior_close in _PASSING:
        return verdict(ANSWERED, f"answered with error events; {closed}")
    expected = report.get("expectedClose") or {}
    accepted_by_autobahn = bool(expected.get("closedByMe")) and 1000 in expected.get(
        "closeCode", ())
    messages = client_messages(report)
    documented: dict[int, str] = {}
    if any(message.binary for message in messages):
        documented[1003] = "a binary message"
    largest = max((message.size for message in messages), default=0)
    if largest > max_message_size:
        documented[1009] = f"a {largest}-byte message above MAX_MESSAGE_SIZE"
    if accepted_by_autobahn and code in documented and clean and not by_client:
        return verdict(REFUSED, f"{closed} on {documented[code]}")
    return verdict(FAILED, f"{closed}; Autobahn expected {expected.get('closeCode')} "
                           f"({report.get('resultClose', '')})")


def summarise(verdicts: Iterable[Verdict]) -> tuple[str, int]:
    """The table by group, then the failures and known deviations one per line; returns the
    text and the number of failures."""
    by_group: dict[str, Counter[str]] = defaultdict(Counter)
    seconds: defaultdict[str, float] = defaultdict(float)
    listed: list[Verdict] = []
    for item in sorted(verdicts, key=lambda v: case_key(v.case)):
        by_group[item.group][item.kind] += 1
        seconds[item.group] += item.seconds
        if item.kind in (KNOWN, FAILED):
            listed.append(item)
    header = f"{'group':<6}{'cases':>6}" + "".join(f"{kind:>12}" for kind in KINDS) + (
        f"{'seconds':>9}")
    lines = [header, "-" * len(header)]
    total: Counter[str] = Counter()
    for group in sorted(by_group, key=int):
        counts = by_group[group]
        total.update(counts)
        lines.append(f"{group:<6}{sum(counts.values()):>6}"
                     + "".join(f"{counts[kind]:>12}" for kind in KINDS)
                     + f"{seconds[group]:>9.1f}")
    lines.append("-" * len(header))
    lines.append(f"{'all':<6}{sum(total.values()):>6}"
                 + "".join(f"{total[kind]:>12}" for kind in KINDS)
                 + f"{sum(seconds.values()):>9.1f}")
    lines.extend(f"{item.kind:<7}{item.case:<9}{item.detail}" for item in listed)
    return "\n".join(lines), total[FAILED]
