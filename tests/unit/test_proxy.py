"""The client's address behind proxies: the PROXY protocol parsers (version 1 text, version 2
binary, IPv4 and IPv6, truncated and malformed headers) and X-Forwarded-For under
TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gogate.proxy import (
    V2_SIGNATURE,
    Address,
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    parse_proxy_header,
)

HTTP = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    """A version 2 header: signature, version and command, family and protocol, length."""
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def v2_inet(source: str, port: int, tlvs: bytes = b"") -> bytes:
    body = (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("10.0.0.1").packed
            + struct.pack("!HH", port, 443) + tlvs)
    return v2(1, 0x11, body)


def v2_inet6(source: str, port: int) -> bytes:
    body = (ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address("::1").packed
            + struct.pack("!HH", port, 443))
    return v2(1, 0x21, body)


# --- version 1 ------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    header = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"
    assert parse_proxy_header(header + HTTP) == ProxyHeader(
        Address("192.0.2.7", 56324), len(header))


def test_v1_tcp6() -> None:
    header = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n"
    assert parse_proxy_header(header) == ProxyHeader(Address("2001:db8::7", 65535), len(header))
    assert str(Address("2001:db8::7", 65535)) == "[2001:db8::7]:65535"


def test_v1_unknown_names_no_client() -> None:
    header = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"
    assert parse_proxy_header(header + HTTP) == ProxyHeader(None, len(header))
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(None, 15)


@pytest.mark.parametrize("cut", range(0, 40))
def test_v1_incomplete_waits_for_more(cut: int) -> None:
    assert parse_proxy_header(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"[:cut]) is None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",  # a field missing
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443 9\r\n",  # a field too many
    b"PROXY TCP4 2001:db8::7 10.0.0.1 56324 443\r\n",  # IPv6 under TCP4
    b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 443\r\n",  # IPv4 under TCP6
    b"PROXY TCP4 192.0.2.999 10.0.0.1 56324 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 0443 443\r\n",  # leading zero
    b"PROXY UDP4 192.0.2.7 10.0.0.1 56324 443\r\n",
    b"PROXY  TCP4 192.0.2.7 10.0.0.1 56324 443\r\n",  # two spaces
    b"PROXY TCP4 192.0.2.\xff 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 " + b"1" * 120,  # no end of line within 107 bytes
    b"PROXZ",
    b"GET /ws HTTP/1.1\r\n",  # no header at all
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
])
def test_v1_malformed_is_refused(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(line)


# --- version 2 ------------------------------------------------------------------------------


def test_v2_ipv4() -> None:
    header = v2_inet("198.51.100.20", 40000)
    assert parse_proxy_header(header + HTTP) == ProxyHeader(
        Address("198.51.100.20", 40000), len(header))


def test_v2_ipv6() -> None:
    header = v2_inet6("2001:db8:1::20", 1)
    assert parse_proxy_header(header + HTTP) == ProxyHeader(
        Address("2001:db8:1::20", 1), len(header))


def test_v2_tlvs_are_skipped() -> None:
    tlv = struct.pack("!BH", 0x05, 4) + b"abcd"  # PP2_TYPE_UNIQUE_ID
    header = v2_inet("198.51.100.20", 40000, tlv)
    assert parse_proxy_header(header + HTTP) == ProxyHeader(
        Address("198.51.100.20", 40000), len(header))


def test_v2_local_and_unspecified_name_no_client() -> None:
    local = v2(0, 0x00, b"")
    assert parse_proxy_header(local + HTTP) == ProxyHeader(None, 16)
    unix = v2(1, 0x31, b"\0" * 216)
    assert parse_proxy_header(unix) == ProxyHeader(None, len(unix))


@pytest.mark.parametrize("cut", range(0, 28))
def test_v2_incomplete_waits_for_more(cut: int) -> None:
    assert parse_proxy_header(v2_inet("198.51.100.20", 40000)[:cut]) is None


@pytest.mark.parametrize("header", [
    V2_SIGNATURE[:5] + b"x",  # a broken signature
    V2_SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 12) + b"\0" * 12,  # version 1
    V2_SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 12) + b"\0" * 12,  # command 2
    v2(1, 0x11, b"\0" * 11),  # an IPv4 block too short
    v2(1, 0x21, b"\0" * 35),  # an IPv6 block too short
    V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 65535),  # far too long
])
def test_v2_malformed_is_refused(header: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(header)


@given(st.ip_addresses(), st.integers(0, 65535), st.binary(max_size=64))
def test_any_address_round_trips(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                 port: int, rest: bytes) -> None:
    if address.version == 4:
        v1 = f"PROXY TCP4 {address} 10.0.0.1 {port} 443\r\n".encode()
        binary = v2_inet(str(address), port)
    else:
        v1 = f"PROXY TCP6 {address} ::1 {port} 443\r\n".encode()
        binary = v2_inet6(str(address), port)
    for header in (v1, binary):
        assert parse_proxy_header(header + rest) == ProxyHeader(
            Address(str(address), port), len(header))


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_refuse_cleanly(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    if header is not None:
        assert 0 < header.length <= len(data)


# --- X-Forwarded-For ------------------------------------------------------------------------

PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
PEER = Address("10.1.1.1", 51000)


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    stranger = Address("203.0.113.9", 4000)
    assert PROXIES.client(stranger, ["198.51.100.1"]) == stranger
    assert TrustedProxies([]).client(PEER, ["198.51.100.1"]) == PEER


def test_trusted_peer_without_header_is_the_client() -> None:
    assert PROXIES.client(PEER, []) == PEER


@pytest.mark.parametrize(("values", "client"), [
    (["198.51.100.1"], "198.51.100.1"),
    # the rightmost hop that is not a proxy: what the client wrote to the left is not believed
    (["6.6.6.6, 198.51.100.1, 10.2.2.2"], "198.51.100.1"),
    (["6.6.6.6", "198.51.100.1,10.2.2.2"], "198.51.100.1"),  # several header lines, in order
    (["2001:db8::5, 2001:db8:ffff::1"], "2001:db8::5"),
    (["[2001:db8::5]"], "2001:db8::5"),
    (["::ffff:198.51.100.1"], "198.51.100.1"),
    (["10.3.3.3, 10.2.2.2"], "10.3.3.3"),  # every hop a proxy: the farthest one
    (["unknown, 10.2.2.2"], "10.2.2.2"),  # a hop that is no address ends the walk
    (["198.51.100.1, garbage"], "10.1.1.1"),
])
def test_forwarded_for_from_a_trusted_peer(values: list[str], client: str) -> None:
    assert PROXIES.client(PEER, values).host == client


def test_trust_matches_networks_and_mapped_addresses() -> None:
    assert PROXIES.trusts("10.255.0.1")
    assert PROXIES.trusts("::ffff:10.0.0.1")
    assert PROXIES.trusts("2001:db8:ffff:1::1")
    assert not PROXIES.trusts("11.0.0.1")
    assert not PROXIES.trusts("not an address")
