"""The Autobahn judge on case reports shaped as wstest writes them: it passes what a non-echo
server should do and fails what it should not."""

from __future__ import annotations

from typing import Any

import pytest

from tests.autobahn.judge import (
    ANSWERED,
    CONFORMANT,
    FAILED,
    KNOWN,
    REFUSED,
    Message,
    client_messages,
    judge,
    summarise,
)

LIMIT = 512_000
ERROR = '{"event":"error","data":{"message":"Invalid message format","code":"INVALID_JSON"}}'
NORMAL_CLOSE = {"closedByMe": True, "closeCode": [1000], "requireClean": True}
PROTOCOL_CLOSE = {"closedByMe": False, "closeCode": [1002], "requireClean": False}


def report(**fields: Any) -> dict[str, Any]:
    """An echo case as wstest reports it: the client sent one text message and closed."""
    base: dict[str, Any] = {
        "behavior": "FAILED", "behaviorClose": "OK", "duration": 3,
        "description": "Send text message with payload 0.",
        "expected": {"OK": [["message", "Hello", False]]}, "expectedClose": NORMAL_CLOSE,
        "received": [["message", ERROR, False]], "remoteCloseCode": 1000,
        "remoteCloseReason": None, "wasClean": True, "closedByMe": True,
        "wirelog": [["TF", [5, "Hello"], 1, True, 0, "00000000", None, None, False]],
    }
    base.update(fields)
    return base


def kind(case_report: dict[str, Any], case: str = "1.1.1") -> str:
    return judge(case, case_report, LIMIT).kind


def test_autobahn_passes_stand() -> None:
    assert kind(report(behavior="NON-STRICT", behaviorClose="OK")) == CONFORMANT


def test_error_events_instead_of_the_echo_pass() -> None:
    assert kind(report()) == ANSWERED
    truncated = ERROR[:64] + " ..."  # how reports keep longer messages
    assert kind(report(received=[["message", truncated, False]])) == ANSWERED


@pytest.mark.parametrize("received", [
    [["message", "Hello", False]],  # an echo: not what the gateway does
    [["message", "", True]],  # binary
    [["message", ERROR, False], ["message", ERROR, False]],  # two answers to one message
    [["pong", "x"], ["message", ERROR, False]],  # a pong nobody asked for
])
def test_anything_but_one_error_event_per_message_fails(received: list[Any]) -> None:
    assert kind(report(received=received)) == FAILED


def test_nothing_is_answered_after_a_protocol_error() -> None:
    violation = report(expected={"OK": []}, expectedClose=PROTOCOL_CLOSE, remoteCloseCode=1002,
                       closedByMe=False)
    assert kind(violation) == FAILED
    assert kind({**violation, "received": [], "behavior": "OK"}) == CONFORMANT


def test_binary_is_refused_with_1003_only() -> None:
    binary = report(received=[], behaviorClose="FAILED", remoteCloseCode=1003, closedByMe=False,
                    wirelog=[["TF", [0, ""], 2, True, 0, "00000000", None, None, False]])
    assert kind(binary) == REFUSED
    assert kind({**binary, "remoteCloseCode": 1000}) == FAILED
    assert kind({**binary, "wasClean": False}) == FAILED
    text_refused = report(behaviorClose="FAILED", remoteCloseCode=1003, closedByMe=False)
    assert kind(text_refused) == FAILED


def test_1009_only_above_the_size_limit() -> None:
    def performance(size: str) -> dict[str, Any]:
        return report(received=[], wirelog=[], behaviorClose="FAILED", remoteCloseCode=1009,
                      closedByMe=False, expected={},
                      description=f"Send text message message with payload of length {size}.")
    assert kind(performance("1 * 2**20 (1M)"), "9.1.3") == REFUSED
    assert kind(performance("64 * 2**10 (64k)"), "9.1.1") == FAILED


def test_wrong_close_codes_fail() -> None:
    invalid_code = report(received=[], expected={"OK": []}, behaviorClose="WRONG CODE",
                          expectedClose={**PROTOCOL_CLOSE, "closedByMe": True})
    assert kind(invalid_code, "7.9.1") == FAILED
    invalid_utf8 = report(received=[], expected={"OK": []}, behaviorClose="WRONG CODE",
                          expectedClose={**PROTOCOL_CLOSE, "closeCode": [1007]},
                          remoteCloseCode=1002, closedByMe=False)
    assert kind(invalid_utf8, "6.3.1") == FAILED


def test_a_hang_fails_whatever_else() -> None:
    assert kind(report(behavior="OK", wasCloseHandshakeTimeout=True)) == FAILED


def test_known_deviation_only_with_its_code() -> None:
    second_close = report(received=[], expected={"OK": []}, behavior="OK",
                          behaviorClose="WRONG CODE", remoteCloseCode=1002)
    assert kind(second_close, "7.1.2") == KNOWN
    assert kind({**second_close, "remoteCloseCode": 1011}, "7.1.2") == FAILED
    assert kind(second_close, "7.1.1") == FAILED


def test_messages_from_the_wire_log_and_from_descriptions() -> None:
    fragmented = report(wirelog=[
        ["TF", [9, "fragment1"], 1, False, 0, "0", None, None, False],
        ["TF", [4, "ping"], 9, True, 0, "0", None, None, False],
        ["TF", [9, "fragment2"], 0, True, 0, "0", None, None, False],
    ])
    assert client_messages(fragmented) == [Message(False, 18)]
    many = report(wirelog=[], description="Send 1000 binary messages of payload size 16.")
    assert client_messages(many) == [Message(True, 16)] * 1000


def test_summary_counts_failures() -> None:
    verdicts = [judge("1.1.1", report(), LIMIT), judge("7.9.1", report(
        received=[], expected={"OK": []}, behaviorClose="WRONG CODE",
        expectedClose={**PROTOCOL_CLOSE, "closedByMe": True}), LIMIT)]
    table, failures = summarise(verdicts)
    assert failures == 1
    assert "FAILED 7.9.1" in table
