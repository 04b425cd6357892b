"""What happens when a relayed peer's certificate nears its NotAfter: re-authenticate, close or keep.

Why: SVIDs live minutes. Closing every connection at its peer's NotAfter
keeps the promise that no connection outlives the identity that authorized
it, but cuts every gRPC stream, database session and WebSocket every few
minutes. An inbound listener can keep the promise without the outage: TLS
1.3 post-handshake authentication (RFC 8446 4.6.2) asks the client for its
certificate again on the same connection; the client sidecar answers with
its newest SVID, the engine verifies the chain as in the handshake, and the
machine re-authorizes the peer against the policy in force *now*. Only a
failure (bad chain, denied, no answer before the old NotAfter) closes.

``peer_expiry`` per listener:

- ``reauthenticate`` (inbound default): as above. A TLS 1.2 peer, or one
  that did not offer post-handshake auth, cannot be asked: it is closed at
  its NotAfter as before, and the access log says so.
- ``close``: close at the peer certificate's NotAfter (the old behaviour).
- ``keep`` (outbound default): the peer's NotAfter does not bound the
  connection (only ``max_connection_lifetime`` does). On outbound this is
  what a TLS client can offer: it cannot ask a server for its certificate
  again, so the upstream's identity is verified once, at connect, and the
  upstream's own sidecar re-authenticates *us* on its side.

When: the first request goes out halfway between now and the peer's
NotAfter. A client that rotates at half its SVID's life (SPIRE, the
embedded agent) has rotated by then, since the connection cannot have
started before the certificate was issued. A peer that answers with the
same certificate (it has not rotated yet) is asked again halfway through
what is left, no sooner than MIN_INTERVAL; when too little is left, the
connection closes at the NotAfter.

HTTP listeners (not built yet; a note for that work): a refused
re-authentication here yields ``Close(abort=True)``, right for an opaque
byte stream. An HTTP connection should instead finish the response in flight
and close at the request boundary (HTTP/2 GOAWAY; ``Connection: close`` on
HTTP/1.1) so the client's pool reconnects cleanly: the hook is the machine's
``_on_reauth_denied`` / ``_on_reauth_failed``, which is where an HTTP mode
would return its own close-at-boundary action instead.

Pure: times come in as arguments; nothing here reads a clock.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from proxy.config.values import PeerExpiry

__all__ = ["MIN_INTERVAL", "PeerExpiry", "ReauthOutcome", "ReauthRecord", "next_reauth"]

#: Never ask a peer again sooner than this (seconds): a peer that keeps answering with its
#: old certificate must not turn re-authentication into a busy loop.
MIN_INTERVAL = 1.0


class ReauthOutcome(enum.Enum):
    """How one re-authentication ended (access log field and metric label)."""

    RENEWED = "renewed"  # a newer certificate, verified and allowed by the current policy
    UNCHANGED = "unchanged"  # the same certificate again (not rotated yet), still allowed: asked again later
    DENIED = "denied"  # verified, but the current policy refuses the peer: closed
    FAILED = "failed"  # verification failed or the peer broke off the exchange: closed
    UNSUPPORTED = "unsupported"  # TLS 1.2, or no post_handshake_auth from the client: closed at NotAfter


def next_reauth(now: float, not_after: float) -> float | None:
    """When to ask the peer for its certificate next; None when it is too late (close at NotAfter)."""
    remaining = not_after - now
    if remaining < 2 * MIN_INTERVAL:
        return None
    return now + max(MIN_INTERVAL, remaining / 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReauthRecord:
    """One re-authentication of a live connection: an access log line and a metric sample.

    ``peer_id`` is who answered (None when nobody did); ``previous_peer_id``
    who was authorized until now. ``not_after`` is the answering
    certificate's NotAfter; ``reason`` a machine-readable why (a DenyReason
    or VerifyFailure value) on DENIED/FAILED.
    """

    listener: str
    peer_id: str | None
    previous_peer_id: str | None
    outcome: ReauthOutcome
    time: float
    not_after: float | None = None
    rule: str | None = None
    reason: str | None = None
    detail: str = ""

    def to_json(self) -> str:
        """One JSON line, beside the connection records (``"event": "reauthentication"``)."""
        data: dict[str, Any] = {
            "event": "reauthentication", "listener": self.listener, "peer_id": self.peer_id,
            "previous_peer_id": self.previous_peer_id, "outcome": self.outcome.value, "time": self.time,
            "not_after": self.not_after, "rule": self.rule, "reason": self.reason, "detail": self.detail,
        }
        return json.dumps(data, separators=(",", ":"))
