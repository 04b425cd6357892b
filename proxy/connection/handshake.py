"""Turning a handshake's outcome into events.

The engine raises proxy.errors.TlsError or VerificationError; the driver
passes the exception here (one place) so both runtimes and both engines
report the same HandshakeFailed reason for the same failure.
"""

from __future__ import annotations

from proxy.connection.events import HandshakeFailed
from proxy.errors import HandshakeFailure, TlsError, VerificationError


def handshake_failed(now: float, exc: BaseException) -> HandshakeFailed:
    """The HandshakeFailed event for an exception raised during the handshake."""
    if isinstance(exc, VerificationError):
        return HandshakeFailed(now, exc.reason, exc.detail)
    if isinstance(exc, TlsError):
        return HandshakeFailed(now, exc.reason, exc.detail)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return HandshakeFailed(now, HandshakeFailure.PEER_CLOSED, str(exc) or type(exc).__name__)
    if isinstance(exc, OSError):
        return HandshakeFailed(now, HandshakeFailure.PEER_CLOSED, exc.strerror or str(exc))
    return HandshakeFailed(now, HandshakeFailure.INTERNAL, f"{type(exc).__name__}: {exc}")


def is_verify_failure(event: HandshakeFailed) -> bool:
    """True when the peer's certificate was rejected (as opposed to the TLS exchange failing)."""
    return not isinstance(event.reason, HandshakeFailure) or event.reason in (
        HandshakeFailure.VERIFY,
        HandshakeFailure.NO_CLIENT_CERT,
    )
