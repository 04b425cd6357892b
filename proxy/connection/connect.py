"""Connecting upstream: the action, and what counts as "this host" for loops.

Which address to dial comes from the listener (inbound: the app's
``forward_to``, validated loopback-only by the config loader unless the
operator opted out; outbound: ``connect_to`` or, in transparent mode, the
original destination). The deadline comes from ``connect_timeout``.
"""

from __future__ import annotations

import ipaddress

from proxy.connection.actions import ConnectUpstream


def connect_upstream(host: str, port: int, *, now: float, timeout: float) -> ConnectUpstream:
    """The ConnectUpstream action for ``host:port``, due ``timeout`` seconds after ``now``."""
    return ConnectUpstream(host=host, port=port, deadline=now + timeout)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost" (never a name lookup)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
