"""Upstream addresses: parsing ``host:port`` and the loopback-only rule.

An inbound listener forwards decrypted traffic in plaintext, so by default
the target must be on this host (ghostunnel's --unsafe-target rule): a
typo must not send cleartext across the network.
"""

from __future__ import annotations

import ipaddress


def split_host_port(address: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; raises ValueError naming the input."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"invalid address {address!r}: expected host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"invalid address {address!r}: port must be 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_forward_target(address: str, *, allow_non_loopback: bool) -> tuple[str, int]:
    """Validate an inbound forward_to target; raises ValueError when not allowed."""
    host, port = split_host_port(address)
    if not allow_non_loopback and not is_loopback(host):
        raise ValueError(f"forward_to {address!r} is not a loopback address "
                         "(plaintext leaves this host); set allow_non_loopback to override")
    return host, port
