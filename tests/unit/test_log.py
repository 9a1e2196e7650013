"""Logging: credentials never reach a record's text, and both formatters carry the context."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gogate.log import JsonFormatter, TextFormatter, redact

JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIiwiZXhwIjoxODkzNDU2MDAwfQ"
       ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU")


@pytest.mark.parametrize("text", [
    f"token {JWT} refused",
    f"Authorization: Bearer {JWT}",
    "Authorization: Bearer opaque-secret-value",
    "authorization: bearer opaque-secret-value",
])
def test_redact_removes_credentials(text: str) -> None:
    out = redact(text)
    assert JWT not in out
    assert "opaque-secret-value" not in out
    assert "eyJ" not in out


def test_redact_leaves_plain_text() -> None:
    assert redact("user 1 joined chat 2") == "user 1 joined chat 2"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("gogate.test_log")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_formatter_one_object_per_line(
        captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.info("connected", extra={"user_id": 7, "chat_id": 3, "conn_id": 11})
    logger.warning("two\nlines with %s", f"Bearer {JWT}", extra={"user_id": 8})
    try:
        raise ValueError(f"boom {JWT}")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["msg"] == "connected"
    assert first["level"] == "info"
    assert first["logger"] == "gogate.test_log"
    assert (first["user_id"], first["chat_id"], first["conn_id"]) == (7, 3, 11)
    assert second["user_id"] == 8
    assert "chat_id" not in second
    assert second["msg"].startswith("two\nlines")
    assert JWT not in stream.getvalue()
    assert "ValueError" in third["exc"]


def test_text_formatter_redacts_and_carries_context(
        captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(TextFormatter())
    logger.info("auth with %s", JWT, extra={"user_id": 5, "chat_id": 6})
    out = stream.getvalue()
    assert JWT not in out
    assert "user_id=5" in out and "chat_id=6" in out


def test_json_timestamp_is_iso_8601_utc(
        captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    before = datetime.now(UTC)
    logger.info("gogate listening")
    stamp = json.loads(stream.getvalue())["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((parsed - before).total_seconds()) < 1.0
