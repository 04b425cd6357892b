"""The relay's timers: idle timeout and the connection's lifetime bound.

A connection must not outlive the peer's certificate (its identity claim
ends at NotAfter), nor the configured max lifetime: the earlier one wins,
and the close reason says which.
"""

from __future__ import annotations

from proxy.connection.actions import StartRelay
from proxy.connection.events import DeadlineKind


def relay_deadlines(*, idle_timeout: float | None, max_lifetime: float | None,
                    start: float, peer_not_after: float | None, tls: bool = True,
                    buffer_size: int | None = None) -> StartRelay:
    """The StartRelay action for a connection that started at ``start``."""
    configured = start + max_lifetime if max_lifetime else None
    lifetime: float | None = configured
    kind = DeadlineKind.MAX_LIFETIME
    if peer_not_after is not None and peer_not_after > 0 and (configured is None or peer_not_after < configured):
        lifetime, kind = peer_not_after, DeadlineKind.PEER_CERT_EXPIRED
    return StartRelay(idle_timeout=idle_timeout or None, lifetime_deadline=lifetime, lifetime_kind=kind, tls=tls,
                      buffer_size=buffer_size)
