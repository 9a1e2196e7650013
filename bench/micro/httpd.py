"""A tiny HTTP/1.1 keep-alive server for the backend-call micro-benchmark.

Every request, whatever its method and path, gets the same ``201`` answer: a message as the
backend returns it for ``POST /api/v1/messages``. It runs in a process of its own, so that the
benchmark's CPU time is the client's alone.

    python -m bench.micro.httpd     # prints its port, serves until it is terminated
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Final, cast

import uvloop

MESSAGE: Final = (
    b'{"id":184467,"chat_id":42,"user":{"id":1001,"full_name":"Jane Doe"},"type":"text",'
    b'"text":"Running late: start without me.","reply_to":null,"attachments":[],'
    b'"created_at":"2024-11-25T18:41:07.512Z"}'
)
REPLY: Final = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(MESSAGE), MESSAGE))
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Answer(asyncio.Protocol):
    """One client connection: each whole request (head and ``Content-Length`` body) is
    answered with :data:`REPLY`, in order."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP transport of the loop

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            match = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            total = end + 4 + (int(match[1]) if match else 0)
            if len(buffer) < total:
                return
            del buffer[:total]
            assert self._transport is not None
            self._transport.write(REPLY)


async def serve() -> None:
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        uvloop.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
