"""Config value types that more than one part of sidecar.yaml uses: addresses, limits, transparent modes.

Split from model.py so that transparent.py (which model.py's SidecarConfig
holds) can use them without importing model.py: the two were an import
circle. model.py re-exports every name, so ``from proxy.config.model import
HostPort`` keeps working.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass


class InboundMode(enum.Enum):
    """Transparent inbound: ``strict`` refuses plaintext, ``permissive`` passes it (migration)."""

    STRICT = "strict"
    PERMISSIVE = "permissive"


class PeerExpiry(enum.Enum):
    """What a listener does when a relayed peer's certificate nears its NotAfter (proxy/connection/reauth.py)."""

    REAUTHENTICATE = "reauthenticate"
    CLOSE = "close"
    KEEP = "keep"


class Unmatched(enum.Enum):
    """Transparent outbound, for a destination with no route: refuse it, or pass it through in plaintext."""

    REFUSE = "refuse"
    PASSTHROUGH = "passthrough"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPort:
    """A TCP address: an IP literal or a host name, and a port (1-65535).

    Attributes:
        host: IP literal (IPv6 without brackets) or DNS name.
        port: 1-65535.
    """

    host: str
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or None for a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and the name ``localhost``."""
        ip = self.ip
        return ip.is_loopback if ip is not None else self.host == "localhost"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per-connection bounds; defaults are safe for a typical service.

    Attributes:
        handshake_timeout: seconds for a TLS handshake to complete.
        connect_timeout: seconds for an upstream TCP connect.
        idle_timeout: seconds without a byte either way before closing; None = never.
        max_connections: concurrent connections per listener; over it, new ones are refused.
        buffer_size: bytes buffered per direction per connection (backpressure beyond it).
        max_connection_lifetime: seconds; None = only the peer certificate's NotAfter bounds it
            (a connection is always closed at the earlier of the two).
        max_pending_handshakes: inbound connections of a listener still before the end of their
            TLS handshake; beyond it new connections are closed at accept (established ones are
            not counted, so a handshake flood cannot starve them).
        max_pending_handshakes_per_source: the same, from one source address.
    """

    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float | None = 300.0
    max_connections: int = 10000
    buffer_size: int = 64 * 1024
    max_connection_lifetime: float | None = None
    max_pending_handshakes: int = 1024
    max_pending_handshakes_per_source: int = 128


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


def parse_host_port(text: str, *, ip_only: bool = False) -> HostPort:
    """Parse ``host:port`` / ``[v6]:port``; ``ip_only`` also allows ``localhost`` (for binding).

    Raises:
        ValueError: naming the input and what is expected.
    """
    expect = "expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(f"invalid address {text!r}: {expect}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {text!r}: {expect}")
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: write an IPv6 address in brackets, e.g. [::1]:8443")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid address {text!r}: the port must be a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ip_only and host != "localhost":
            raise ValueError(f"invalid address {text!r}: a listen address is an IP (0.0.0.0, 127.0.0.1, [::])"
                             " or localhost") from None
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"invalid address {text!r}: {host!r} is neither an IP address nor a host name"
                             ) from None
    return HostPort(host=host, port=int(port))
