"""The error tables: every close reason is valid on the wire, every client error code exists."""

from __future__ import annotations

import pytest

from gogate.errors import CLOSE_REASONS, Close, ErrorCode

CONTRACT_ERROR_CODES = [
    "INVALID_JSON", "UNKNOWN_EVENT", "INVALID_PAYLOAD", "INVALID_CHAT", "AUTH_REQUIRED",
    "AUTH_FAILED", "AUTH_EXPIRED", "ALREADY_AUTHENTICATED", "NOT_A_MEMBER", "FORBIDDEN",
    "NOT_FOUND", "VALIDATION_FAILED", "RATE_LIMITED", "TOO_MANY_CONNECTIONS",
    "BACKEND_UNAVAILABLE",
]


@pytest.mark.parametrize("close", list(Close), ids=lambda c: c.name)
def test_close_reasons(close: Close) -> None:
    code, reason, reconnect = close.value
    assert code in {1001, 1002, 1003, 1007, 1008, 1009, 1013, 4001}
    assert 0 < len(reason.encode("utf-8")) < 123
    assert isinstance(reconnect, bool)
    assert CLOSE_REASONS[close.name] == close.value


def test_close_codes_of_the_contract() -> None:
    assert Close.MESSAGE_TOO_BIG.value.code == 1009
    assert Close.INVALID_UTF8.value.code == 1007
    assert Close.BINARY_FRAME.value.code == 1003
    assert Close.PROTOCOL_ERROR.value.code == 1002
    assert Close.SLOW_CONSUMER.value.code == 1013
    assert Close.SHUTDOWN.value.code == 1001
    assert Close.AUTH_TIMEOUT.value.code == 1008
    assert Close.REVOKED.value.code == 4001


@pytest.mark.parametrize("code", CONTRACT_ERROR_CODES)
def test_error_code_exists(code: str) -> None:
    assert ErrorCode[code] == code
    assert ErrorCode(code).value == code
