"""A listener's protocol and HTTP settings as plain data (read by proxy.config.http)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from proxy.http.xfcc import XfccMode

if TYPE_CHECKING:  # annotations only: config imports this module, so it must not reach back
    from proxy.connection.events import DecisionLike
    from proxy.policy.http_match import RequestView
    from proxy.policy.match import PeerMatcher


class Protocol(enum.Enum):
    """What a listener carries: bytes (tcp, the L4 fast path) or HTTP requests."""

    TCP = "tcp"
    HTTP = "http"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    """The HTTP layer's settings of one listener (defaults when ``http:`` is omitted).

    Attributes:
        xfcc: how an inbound listener sets ``x-forwarded-client-cert``.
        max_head_bytes: largest request head (line and headers) accepted.
        pool_size: outbound: idle mTLS connections kept per upstream.
        pool_idle_timeout: outbound: seconds an idle pooled connection is kept.
    """

    xfcc: XfccMode = XfccMode.SANITIZE
    max_head_bytes: int = 65536
    pool_size: int = 8
    pool_idle_timeout: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSpec:
    """What an HTTP listener's connections need beyond the connection spec (built per reload).

    Attributes:
        settings: the listener's ``http:`` settings.
        decide: inbound: ``(peer_id, RequestView) -> Decision`` under the listener's policy.
        expect: outbound: the upstream's expected SPIFFE ID patterns.
    """

    settings: HttpSettings
    decide: Callable[[str, RequestView], DecisionLike] | None = None
    expect: PeerMatcher | None = None
