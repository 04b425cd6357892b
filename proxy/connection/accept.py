"""Admission: whether a freshly accepted connection may proceed at all.

Fail closed: without a current identity (no SVID yet, or expired) nothing is
served, and beyond max_connections new connections are refused at once
rather than queued (a queue would only move the overload elsewhere).
"""

from __future__ import annotations

from proxy.errors import CloseReason


def admit(*, ready: bool, active: int, max_connections: int | None, needs_identity: bool = True,
          refusal: tuple[CloseReason, str] | None = None) -> tuple[CloseReason, str] | None:
    """Return None to admit, else (close reason, detail) to refuse.

    ``active`` counts connections already open on this listener, excluding
    the new one. ``refusal`` is a routing verdict made before (transparent
    mode: no route for the original destination, or a loop back to us).
    A plaintext passthrough needs no identity of ours.
    """
    if refusal is not None:
        return refusal
    if needs_identity and not ready:
        return CloseReason.NOT_READY, "no current X.509-SVID: failing closed"
    if max_connections is not None and active >= max_connections:
        return CloseReason.OVERLOADED, f"{active} connections open (max_connections={max_connections})"
    return None
