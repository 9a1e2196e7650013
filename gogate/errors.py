"""Errors of the gateway: the exception tree, the client error codes and the close codes.

The exception tree::

    GogateError
     ├── ConfigError              a setting cannot be parsed; startup stops with exit code 2
     └── ClientError              an event failed; the client gets an ``error`` event with its code
          ├── AuthFailed          the backend refused the token (AUTH_FAILED)
          ├── AuthExpired         the token expired or a user call was answered 401 (AUTH_EXPIRED)
          ├── BackendRejected     the backend answered 403 / 404 / 400 / 422
          └── BackendUnavailable  the backend timed out, refused the connection or answered 5xx

Every ``error`` event carries one of :class:`ErrorCode`; every close the gateway initiates is one
of :data:`CLOSE_REASONS`, which says what the client should do next.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

__all__ = [
    "CLOSE_REASONS",
    "AuthExpired",
    "AuthFailed",
    "BackendRejected",
    "BackendUnavailable",
    "ClientError",
    "Close",
    "CloseReason",
    "ConfigError",
    "ErrorCode",
    "GogateError",
]


class ErrorCode(enum.StrEnum):
    """Codes of the ``error`` event, and what a client should do about each."""

    INVALID_JSON = "INVALID_JSON"  # fix the client: frames are JSON objects with a string event
    UNKNOWN_EVENT = "UNKNOWN_EVENT"  # fix the client: the event name is not a client event
    INVALID_PAYLOAD = "INVALID_PAYLOAD"  # fix the client: the message names the field
    INVALID_CHAT = "INVALID_CHAT"  # the chat id is not positive, or the chat does not exist
    AUTH_REQUIRED = "AUTH_REQUIRED"  # send auth first
    AUTH_FAILED = "AUTH_FAILED"  # get a new token; the third failure closes the connection
    AUTH_EXPIRED = "AUTH_EXPIRED"  # send auth with a fresh token within AUTH_TIMEOUT seconds
    ALREADY_AUTHENTICATED = "ALREADY_AUTHENTICATED"  # open another connection for another user
    NOT_A_MEMBER = "NOT_A_MEMBER"  # the user is not a member of that chat
    FORBIDDEN = "FORBIDDEN"  # the backend refused the action (403)
    NOT_FOUND = "NOT_FOUND"  # the backend does not know the target (404)
    VALIDATION_FAILED = "VALIDATION_FAILED"  # the backend refused the content (400/422)
    RATE_LIMITED = "RATE_LIMITED"  # slow down; the event was not processed
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"  # close another device first
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"  # retry later; the event may be retried as is
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a fault in the gateway; retry, and report it


class GogateError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GogateError):
    """A setting is missing or cannot be parsed; the message names the variable and the value."""


class ClientError(GogateError):
    """An event failed in a way the client is told about, with a code and a safe message."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class AuthFailed(ClientError):
    code = ErrorCode.AUTH_FAILED


class AuthExpired(ClientError):
    code = ErrorCode.AUTH_EXPIRED


class BackendRejected(ClientError):
    """The backend refused a call; ``status`` is its HTTP status."""

    def __init__(self, message: str, code: ErrorCode, status: int) -> None:
        super().__init__(message, code)
        self.status = status


class BackendUnavailable(ClientError):
    code = ErrorCode.BACKEND_UNAVAILABLE


class CloseReason(NamedTuple):
    """A close the gateway initiates: WebSocket code, reason sent in the close frame (< 123
    bytes), and whether the client should reconnect."""

    code: int
    reason: str
    reconnect: bool


class Close(enum.Enum):
    """Every reason the gateway closes a connection."""

    # policy (1008): who may hold a connection
    AUTH_TIMEOUT = CloseReason(1008, "authentication timeout", True)
    AUTH_FAILED = CloseReason(1008, "too many failed authentication attempts", False)
    AUTH_EXPIRED = CloseReason(1008, "token expired", True)
    TOO_MANY_CONNECTIONS = CloseReason(1008, "too many connections for this user", False)
    # the backend revoked the user; the close frame carries the backend's reason if it gave one
    REVOKED = CloseReason(4001, "revoked", False)
    # what the client sent cannot be read
    MESSAGE_TOO_BIG = CloseReason(1009, "message too big", True)
    INVALID_UTF8 = CloseReason(1007, "invalid UTF-8 in text frame", True)
    BINARY_FRAME = CloseReason(1003, "binary frames are not supported", False)
    PROTOCOL_ERROR = CloseReason(1002, "protocol error", True)
    # the connection's health, and the server's
    PING_TIMEOUT = CloseReason(1001, "no frame received within the pong wait", True)
    SLOW_CONSUMER = CloseReason(1013, "slow consumer: send queue full", True)
    REPLAY_OVERRUN = CloseReason(1013, "replay overrun: resume again", True)
    WRITE_TIMEOUT = CloseReason(1013, "slow consumer: write blocked too long", True)
    SHUTDOWN = CloseReason(1001, "server shutting down", True)


CLOSE_REASONS: Final[dict[str, CloseReason]] = {c.name: c.value for c in Close}
