"""The reference server of the fan-out benchmarks: a bare picows broadcast hub.

No protocol, no backend: every text frame a client sends is written to every connected
client, one ``transport.send`` (one write) per delivery. It is what a minimal hub costs on this
machine, measured in the same run as gogate.

    python -m bench.refhub --port 9000 [--read-buffer 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

__all__ = ["main"]


class HubListener(WSListener):  # type: ignore[misc]
    clients: set[WSTransport] = set()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.clients.add(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            for client in self.clients:
                client.send(WSMsgType.TEXT, payload)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.clients.discard(transport)


async def serve(port: int, read_buffer: int, aiofastnet: bool) -> None:
    server = await ws_create_server(lambda _request: HubListener(), "127.0.0.1", port,
                                    read_buffer_init_size=read_buffer,
                                    use_aiofastnet=None if aiofastnet else False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--read-buffer", type=int, default=1024)
    parser.add_argument("--loop-transports", action="store_true",
                        help="use the loop's own transports instead of picows' default "
                             "(aiofastnet, when installed), as gogate does")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.read_buffer, not args.loop_transports))


if __name__ == "__main__":
    main()
