"""Permissive mode's sniffing: real ClientHello bytes from OpenSSL, and real plaintext."""

from __future__ import annotations

import socket
import ssl
import struct

import pytest

from proxy.interception.original_dst import parse_sockaddr_in, parse_sockaddr_in6, peek_is_tls_client_hello


def _client_hello(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = minimum, maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="spiffe.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_real_client_hello_is_recognised(version: ssl.TLSVersion) -> None:
    assert peek_is_tls_client_hello(_client_hello(version, version))


def test_the_first_six_bytes_of_a_client_hello_are_enough() -> None:
    hello = _client_hello(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert peek_is_tls_client_hello(hello[:6])
    assert not peek_is_tls_client_hello(hello[:5]), "too short to decide means not TLS (yet)"


@pytest.mark.parametrize("plaintext", [
    b"GET / HTTP/1.1\r\nHost: b\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n",
    b"\x16\x03\x01\x00\x10\x02",  # a handshake record, but a ServerHello
    b"\x16\x03\x04\x00\x10\x01",  # no such record version
    b"\x17\x03\x03\x00\x10\x01",  # application data
    b"",
])
def test_plaintext_and_other_records_are_not_client_hellos(plaintext: bytes) -> None:
    assert not peek_is_tls_client_hello(plaintext)


def test_sockaddr_in_is_decoded_in_network_byte_order() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + socket.inet_aton("10.200.1.11") + bytes(8)
    assert parse_sockaddr_in(raw) == ("10.200.1.11", 8080)


def test_sockaddr_in6_with_a_mapped_ipv4_address_gives_the_ipv4_address() -> None:
    address = socket.inet_pton(socket.AF_INET6, "::ffff:10.200.1.11")
    raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 443, 0) + address + struct.pack("=I", 0)
    assert parse_sockaddr_in6(raw) == ("10.200.1.11", 443)
