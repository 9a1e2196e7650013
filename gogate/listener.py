"""The public port's listening socket: a picows WebSocket protocol per connection, told the
client's address when proxies stand in front of the gateway.

Without ``TRUSTED_PROXIES`` and ``PROXY_PROTOCOL``, each accepted connection gets its picows
protocol directly, with the gateway's router as listener factory: nothing is looked up per
connection. With either, a :class:`~gogate.proxy.ClientHandoff` comes first: it learns the
address (and reads the PROXY protocol header), then builds the picows protocol whose listener
factory is the router told that address (or, from a trusted proxy, the one its
``X-Forwarded-For`` names).

A client that ends its stream has its socket closed by the listener's closer, a bounded number
per turn of the loop (plain TCP; the TLS layer closes its sockets itself).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable
from typing import Final, TypeAlias

from picows import WSAutoPingStrategy, WSListener, WSUpgradeRequest, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs

from gogate.config import Settings
from gogate.proxy import Address, ClientHandoff, TrustedProxies

__all__ = ["Route", "listen"]

#: The router of the public port: given a request and the client's address (None when no
#: proxy is configured: the peer's, looked up only when needed), the listener of a WebSocket,
#: an HTTP answer, or None for 404.
Route: TypeAlias = Callable[..., WSListener | WSUpgradeResponseWithListener | None]

_PICOWS_LOG: Final = logging.getLogger("picows.server")

#: Sockets whose client ended its stream, closed per turn of the event loop. Closing one costs
#: the loop some 30 µs (the descriptor, its poll registration, the connection's teardown); when
#: thousands of clients drop at once (a network blip, a load balancer's reload), closing them
#: all in one turn would hold up every connection still open for a third of a second.
CLOSES_PER_TURN: Final = 64


class _Closer:
    """Closes the sockets handed to it, :data:`CLOSES_PER_TURN` per turn of the loop, in the
    order their clients left."""

    __slots__ = ("_loop", "_scheduled", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: collections.deque[asyncio.BaseTransport] = collections.deque()
        self._scheduled = False

    def close_soon(self, transport: asyncio.BaseTransport) -> None:
        self._waiting.append(transport)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._close_some)

    def _close_some(self) -> None:
        waiting = self._waiting
        for _ in range(min(CLOSES_PER_TURN, len(waiting))):
            waiting.popleft().close()  # nothing when the gateway closed it meanwhile
        if waiting:
            self._loop.call_soon(self._close_some)  # the next turn, after the loop's I/O
        else:
            self._scheduled = False


class _Protocol(WSProtocol):  # type: ignore[misc]  # picows' protocol is untyped
    """picows' protocol, except that the end of a client's stream closes its socket through
    the listener's :class:`_Closer` instead of at once (plain TCP only: TLS closes its own)."""

    __slots__ = ()
    closer: _Closer

    def eof_received(self) -> bool:
        self.closer.close_soon(self.transport.underlying_transport)
        return True  # keep the socket until the closer's turn; nothing more will be read


async def listen(route: Route, settings: Settings, *, ssl_context: ssl.SSLContext | None,
                 reuse_port: bool) -> asyncio.Server:
    """Listen on ``HOST:PORT``; every request goes to ``route(request)``, or to
    ``route(request, client=address)`` when proxies are configured."""
    s = settings
    kind: type = WSProtocol
    if ssl_context is None:
        class Protocol(_Protocol):
            __slots__ = ()
            closer = _Closer(asyncio.get_running_loop())
        kind = Protocol

    def websocket(factory: Callable[[WSUpgradeRequest], object]) -> asyncio.BaseProtocol:
        protocol: asyncio.BaseProtocol = kind(
            None, None, False,  # a server: no host, no path
            factory, _PICOWS_LOG,
            True,  # an exception in a callback disconnects that client
            s.auth_timeout,  # for the HTTP request: a client gets AUTH_TIMEOUT for each step
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE,  # gogate pings itself
            False,  # pings are answered after the frame checks
            s.max_message_size,
            None,  # no extra headers
            s.read_buffer_size)
        return protocol

    trusted = TrustedProxies(s.trusted_proxies)
    if trusted or s.proxy_protocol:
        def for_client(peer: Address) -> asyncio.BaseProtocol:
            def routed(request: WSUpgradeRequest) -> object:
                forwarded = request.headers.getall("x-forwarded-for", ())
                return route(request, client=trusted.client(peer, forwarded))
            return websocket(routed)

        def protocol() -> asyncio.BaseProtocol:
            return ClientHandoff(for_client, trusted, s.proxy_protocol, s.auth_timeout)
    else:
        def protocol() -> asyncio.BaseProtocol:
            return websocket(route)

    return await asyncio.get_running_loop().create_server(
        protocol, s.host, s.port, reuse_address=True, reuse_port=reuse_port,
        backlog=s.listen_backlog,  # a reconnect storm overflows a short queue
        ssl=ssl_context)
