"""What a client may put in its frames beyond what picows checks: the close codes it may send,
and a text message sent in fragments, put back together within ``MAX_MESSAGE_SIZE``.

A connection holds a :class:`Fragments` only while a fragmented message is arriving, so an
idle connection pays nothing for it.
"""

from __future__ import annotations

from typing import Final

from picows import WSFrame

from gogate.errors import Close

__all__ = ["UNSENDABLE_CLOSE_CODES", "Fragments", "unsendable_close"]

# Close codes a peer may report but never send (RFC 6455, 7.4): 0 is outside the defined
# range; 1005, 1006 and 1015 stand for "no code", "dropped" and "TLS failed". picows fails
# 1005 and 1015 itself; 0 and 1006 reach the listener.
UNSENDABLE_CLOSE_CODES: Final = frozenset({0, 1005, 1006, 1015})


def unsendable_close(frame: WSFrame) -> bool:
    """Whether a CLOSE frame carries a code no endpoint may send: the gateway fails such a
    connection with 1002. An empty payload (no code at all) is a normal close."""
    return frame.payload_size >= 2 and frame.get_close_code().value in UNSENDABLE_CLOSE_CODES


class Fragments:
    """A text message arriving in fragments: started by its first frame, fed each
    continuation frame, bounded by ``limit`` bytes in all."""

    __slots__ = ("_data", "_limit")

    def __init__(self, first: WSFrame, limit: int) -> None:
        self._data = bytearray(first.get_payload_as_memoryview())
        self._limit = limit

    def add(self, frame: WSFrame) -> str | Close | None:
        """Take one continuation frame: the whole text once the final one has arrived, the
        reason to close when the message is too big or not UTF-8, None while more must come."""
        data = self._data
        if len(data) + frame.payload_size > self._limit:
            return Close.MESSAGE_TOO_BIG
        data += frame.get_payload_as_memoryview()
        if not frame.fin:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return Close.INVALID_UTF8
