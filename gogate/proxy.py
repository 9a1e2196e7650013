"""The client's address when gogate runs behind proxies.

Behind a TLS terminator or a load balancer, the peer of every connection is the proxy. Two ways
let the proxy name the client, and gogate believes them only from the peers it is told to:

- ``X-Forwarded-For`` (``TRUSTED_PROXIES``, a list of networks): when the peer is trusted, the
  client is the rightmost hop of the header that is not itself a trusted proxy (every proxy
  appends the address it saw, so the hops left of an untrusted one could have been made up by
  the client).
- The PROXY protocol (``PROXY_PROTOCOL=true``): the proxy opens every connection with a header,
  version 1 (one text line) or 2 (binary), that carries the client's address and port, before
  any byte of HTTP. :class:`ClientHandoff` reads it, then hands the transport over to the
  WebSocket protocol; a connection without a valid header is closed, and so is one from a
  peer outside ``TRUSTED_PROXIES`` when that list is set.

The parsers are pure functions of bytes; the handoff is a plain asyncio protocol that steps out
of the way (``transport.set_protocol``) as soon as the address is known.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, cast

from gogate.log import conn_log, server_log

__all__ = ["Address", "ClientHandoff", "ProxyHeader", "ProxyHeaderError", "TrustedProxies",
           "parse_proxy_header", "peer_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # the longest version-1 line, CRLF included
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX: Final = 16 + 4096  # fixed part + addresses and TLVs: more is not a proxy's header
_V2_FIXED = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")


class Address(NamedTuple):
    """A client's address; ``port`` is None when only the address is known (a forwarded hop)."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class ProxyHeaderError(ValueError):
    """The bytes cannot start a valid PROXY protocol header."""


class ProxyHeader(NamedTuple):
    """A complete header: the client it names (None for a proxy's own connection, such as a
    health check: LOCAL or UNKNOWN) and its length in bytes."""

    source: Address | None
    length: int


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The PROXY protocol header (v1 or v2) at the start of ``data``; None while ``data`` is a
    valid beginning of one that is not complete yet."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V1_PREFIX[:len(data)]):
        raise ProxyHeaderError("no PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("version 1 line longer than 107 bytes")
        return None
    try:
        words = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("version 1 line is not ASCII") from None
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(None, end + 2)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("version 1 line is not PROXY TCP4|TCP6 src dst sport dport")
    version = 4 if words[1] == "TCP4" else 6
    source, port = _v1_address(words[2], version), _v1_port(words[4])
    _v1_address(words[3], version)  # the destination is checked, not used
    _v1_port(words[5])
    return ProxyHeader(Address(str(source), port), end + 2)


def _v1_address(text: str, version: int) -> IPAddress:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"version 1 address {text[:40]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"version 1 address {text!r} is not IPv{version}")
    return address


def _v1_port(text: str) -> int:
    if not (text.isdigit() and text.isascii()) or len(text) > 5 or int(text) > 65535 or (
            len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"version 1 port {text[:10]!r} is not a port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V2_SIGNATURE[:len(data)]):
        raise ProxyHeaderError("no PROXY protocol header")
    if len(data) < _V2_FIXED.size:
        return None
    _, version_command, family, length = _V2_FIXED.unpack_from(data)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"version 2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"version 2 command {command} is neither LOCAL nor PROXY")
    total = _V2_FIXED.size + length
    if total > V2_MAX:
        raise ProxyHeaderError(f"version 2 header of {total} bytes")
    if len(data) < total:
        return None
    if command == 0:  # LOCAL: the proxy's own connection; the addresses are to be ignored
        return ProxyHeader(None, total)
    kind = {0x11: _V2_INET, 0x21: _V2_INET6}.get(family)  # TCP over IPv4, TCP over IPv6
    if kind is None:  # UNSPEC, UDP, UNIX: no client address gogate could use
        return ProxyHeader(None, total)
    if length < kind.size:
        raise ProxyHeaderError(f"version 2 address block of {length} bytes")
    source, _, port, _ = kind.unpack_from(data, _V2_FIXED.size)
    return ProxyHeader(Address(str(ipaddress.ip_address(source)), port), total)


def _ip(text: str) -> IPAddress | None:
    """The address written in ``text`` (an IPv4-mapped IPv6 address as the IPv4 one), or None."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """``TRUSTED_PROXIES``: the networks whose word about the client's address is believed."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        address = _ip(host)
        return address is not None and any(address in n for n in self.networks)

    def client(self, peer: Address, forwarded_for: Sequence[str]) -> Address:
        """The client's address: from ``X-Forwarded-For`` (every value of the header, in
        order) when ``peer`` is trusted, the rightmost hop that is not a trusted proxy;
        otherwise ``peer``. A hop that is not an address ends the walk at the last one
        known."""
        if not forwarded_for or not self.trusts(peer.host):
            return peer
        client = peer
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = _ip(hop)
            if address is None:
                break
            client = Address(str(address))
            if not any(address in n for n in self.networks):
                break
        return client


def peer_address(transport: asyncio.BaseTransport) -> Address:
    """The address of the transport's peer."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple):
        host = peer[0]
        address = _ip(host)
        return Address(str(address) if address is not None else host, int(peer[1]))
    return Address(str(peer or ""))


class ClientHandoff(asyncio.Protocol):
    """The first protocol of a connection on the public port: it learns the client's address
    (the peer's, or the PROXY protocol header's), then hands the transport, and the bytes that
    followed the header, to the protocol ``make(address)`` builds."""

    __slots__ = ("_buffer", "_make", "_peer", "_proxy_protocol", "_timeout", "_timer",
                 "_transport", "_trusted")

    warned = False  # whether a connection without a valid header was logged at WARNING

    def __init__(self, make: Callable[[Address], asyncio.BaseProtocol], trusted: TrustedProxies,
                 proxy_protocol: bool, timeout: float) -> None:
        self._make = make
        self._trusted = trusted
        self._proxy_protocol = proxy_protocol
        self._timeout = timeout
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._peer = Address("")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have what is used here
        self._transport = stream = cast(asyncio.Transport, transport)
        self._peer = peer_address(transport)
        if not self._proxy_protocol:
            self._hand_over(stream, self._peer, b"")
        elif self._trusted and not self._trusted.trusts(self._peer.host):
            self._refuse(f"{self._peer} is not in TRUSTED_PROXIES")
        else:
            self._timer = asyncio.get_running_loop().call_later(
                self._timeout, self._refuse, "no PROXY protocol header in time")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._buffer += data
        try:
            header = parse_proxy_header(self._buffer)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            rest, self._buffer = self._buffer[header.length:], b""
            self._hand_over(transport, header.source or self._peer, rest)

    def eof_received(self) -> bool:
        return False  # a peer gone before its header: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._transport = None

    def _hand_over(self, transport: asyncio.Transport, client: Address, rest: bytes) -> None:
        self._stop_timer()
        self._transport = None
        protocol = self._make(client)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if rest and not transport.is_closing():
            _feed(protocol, rest)

    def _refuse(self, reason: str) -> None:
        self._stop_timer()
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        if not ClientHandoff.warned:
            ClientHandoff.warned = True
            server_log.warning("closing connections without a valid PROXY protocol header "
                               "(PROXY_PROTOCOL=true), first from %s: %s", self._peer, reason)
        else:
            conn_log.debug("connection closed: %s", reason, extra={"remote": str(self._peer)})

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Deliver bytes already read to ``protocol`` as if they came from the socket."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            if size == 0:
                raise BufferError("the protocol offered no buffer for the bytes after the header")
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]
    elif isinstance(protocol, asyncio.Protocol):
        protocol.data_received(data)
