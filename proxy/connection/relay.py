"""The relay's timers: idle timeout, the connection's lifetime bound, and when to re-authenticate.

A connection must not outlive the identity that authorized it (the peer's
certificate ends its claim at NotAfter), nor the configured max lifetime:
the earlier one wins, and the close reason says which. With ``peer_expiry:
keep`` only the configured lifetime counts; with ``reauthenticate`` the
NotAfter still bounds it, but a re-authentication before then moves it to
the renewed certificate's (proxy/connection/reauth.py).
"""

from __future__ import annotations

from proxy.connection.actions import RearmRelay, StartRelay
from proxy.connection.events import DeadlineKind
from proxy.connection.reauth import next_reauth


def lifetime_bound(*, start: float, max_lifetime: float | None,
                   peer_not_after: float | None) -> tuple[float | None, DeadlineKind]:
    """The earlier of ``start + max_lifetime`` and the peer's NotAfter (None: the peer does not bound it)."""
    configured = start + max_lifetime if max_lifetime else None
    if peer_not_after is not None and peer_not_after > 0 and (configured is None or peer_not_after < configured):
        return peer_not_after, DeadlineKind.PEER_CERT_EXPIRED
    return configured, DeadlineKind.MAX_LIFETIME


def relay_deadlines(*, idle_timeout: float | None, max_lifetime: float | None,
                    start: float, peer_not_after: float | None, tls: bool = True,
                    buffer_size: int | None = None, reauth_from: float | None = None) -> StartRelay:
    """The StartRelay action for a connection that started at ``start``.

    ``reauth_from`` (the time now) asks for re-authentication before the
    peer's NotAfter; None: no re-authentication.
    """
    lifetime, kind = lifetime_bound(start=start, max_lifetime=max_lifetime, peer_not_after=peer_not_after)
    reauth_at = next_reauth(reauth_from, peer_not_after) if reauth_from is not None and peer_not_after else None
    return StartRelay(idle_timeout=idle_timeout or None, lifetime_deadline=lifetime, lifetime_kind=kind, tls=tls,
                      buffer_size=buffer_size, reauth_at=reauth_at)


def rearm(*, now: float, start: float, max_lifetime: float | None, peer_not_after: float) -> RearmRelay:
    """The timers after a successful re-authentication: the new NotAfter bounds the connection."""
    lifetime, kind = lifetime_bound(start=start, max_lifetime=max_lifetime, peer_not_after=peer_not_after)
    return RearmRelay(lifetime_deadline=lifetime, lifetime_kind=kind, reauth_at=next_reauth(now, peer_not_after))
