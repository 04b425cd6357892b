"""Where a redirected connection was really going, and whether it speaks TLS.

After an iptables REDIRECT the accepted socket's local address is the
sidecar's own listener; the address the client dialled survives only in the
connection-tracking entry, which the kernel exposes through getsockopt
SO_ORIGINAL_DST (IPv4, returns a sockaddr_in) and IP6T_SO_ORIGINAL_DST
(IPv6, a sockaddr_in6). Both options share the number 80 at different levels.
linkerd2-proxy does the same (proxy/transport/src/orig_dst.rs). After TPROXY
nothing is rewritten and the socket's own address is the original
destination (tproxy_destination).

These helpers are synchronous and take a plain socket (or anything with
getsockopt() and family), so either runtime driver can call them right after
accept(); they do no I/O beyond one getsockopt. The ClientHello sniffer is
re-exported from proxy/connection/sniff.py, where the sans-IO core owns it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Protocol

from proxy.errors import InterceptionError
from proxy.connection.sniff import peek_is_tls_client_hello

__all__ = ["original_destination", "parse_sockaddr_in", "parse_sockaddr_in6", "peek_is_tls_client_hello",
           "tproxy_destination"]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, level SOL_IP
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h, level SOL_IPV6
_SOL_IP = getattr(socket, "SOL_IP", 0)
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
_SOCKADDR_IN_LEN = 16
_SOCKADDR_IN6_LEN = 28


class SocketLike(Protocol):
    """What original_destination needs from a socket (socket.socket, trio's, ...)."""

    @property
    def family(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockname(self) -> tuple[str, int] | tuple[str, int, int, int]: ...


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """Decode a struct sockaddr_in: family (host order), port and address (network order)."""
    if len(raw) < 8:
        raise InterceptionError(f"SO_ORIGINAL_DST returned {len(raw)} bytes, expected a sockaddr_in")
    port = struct.unpack("!H", raw[2:4])[0]
    return str(ipaddress.IPv4Address(raw[4:8])), port


def parse_sockaddr_in6(raw: bytes) -> tuple[str, int]:
    """Decode a struct sockaddr_in6 (family, port, flowinfo, 16-byte address, scope id)."""
    if len(raw) < 24:
        raise InterceptionError(f"IP6T_SO_ORIGINAL_DST returned {len(raw)} bytes, expected a sockaddr_in6")
    port = struct.unpack("!H", raw[2:4])[0]
    address = ipaddress.IPv6Address(raw[8:24])
    mapped = address.ipv4_mapped
    return (str(mapped) if mapped else str(address)), port


def original_destination(sock: SocketLike) -> tuple[str, int]:
    """The (ip, port) the peer dialled before iptables redirected it to us.

    For a connection that was not redirected, the kernel answers with the
    socket's own local address (conntrack still knows the tuple); callers
    compare with getsockname() when they must tell the two apart.

    Raises:
        InterceptionError: the socket is not TCP over IPv4/IPv6, or the kernel
            has no conntrack entry for it (ENOENT: not tracked, e.g. no nat
            table loaded in this namespace).
    """
    try:
        if sock.family == socket.AF_INET:
            return parse_sockaddr_in(sock.getsockopt(_SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN_LEN))
        if sock.family == socket.AF_INET6:
            return parse_sockaddr_in6(sock.getsockopt(_SOL_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6_LEN))
    except OSError as exc:
        option = "SO_ORIGINAL_DST" if sock.family == socket.AF_INET else "IP6T_SO_ORIGINAL_DST"
        raise InterceptionError(f"{option} failed: {exc.strerror or exc} (is the connection tracked by netfilter?)") from None
    raise InterceptionError(f"original destination needs an AF_INET or AF_INET6 socket, got family {sock.family}")


def tproxy_destination(sock: SocketLike) -> tuple[str, int]:
    """The (ip, port) the peer dialled, for a connection delivered by TPROXY.

    TPROXY assigns the packet to our transparent socket without rewriting
    it, so the accepted socket's own address is the original destination:
    no conntrack lookup, and it works where SO_ORIGINAL_DST has no NAT entry
    to read. An IPv4-mapped address comes back as IPv4, like the IPv6 path
    of original_destination.
    """
    host, port = sock.getsockname()[:2]
    mapped = ipaddress.ip_address(host)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped:
        return str(mapped.ipv4_mapped), int(port)
    return str(mapped), int(port)
