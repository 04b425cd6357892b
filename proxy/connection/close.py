"""The one record every connection leaves behind, and how it is written.

Every connection ends with exactly one ConnectionRecord: the access log of
issue 5 and the metrics are derived from it. It says who the peer was, what
the policy decided and by which rule, how many bytes moved and why it closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.connection.transitions import Direction
from proxy.errors import CloseReason, RefusalReason, Verdict


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionRecord:
    """The connection's outcome, written once when it reaches CLOSED.

    ``reason`` is the machine-readable why of a refusal (a DenyReason,
    HandshakeFailure or VerifyFailure); ``detail`` the human one. Enums, not
    strings, so a reason nobody declared cannot reach a log or a metric label.
    ``bytes_in`` counts bytes from the TLS side to the plaintext side,
    ``bytes_out`` the other way. ``audit_denies`` names audit-mode deny
    rules that matched (would have denied; not enforced). ``plaintext``
    marks a connection relayed without TLS (permissive or passthrough).
    ``original_port`` is the port a transparent listener's connection was
    originally for (None on explicit listeners): ``listener`` is the same for
    every port so metrics keep one label value per listener.
    """

    listener: str
    direction: Direction
    peer_id: str | None
    decision: Verdict | None
    rule: str | None
    reason: RefusalReason | None
    detail: str
    bytes_in: int
    bytes_out: int
    duration: float
    close_reason: CloseReason
    tls_version: str | None
    cipher: str | None
    resumed: bool
    start: float
    audit_denies: tuple[str, ...] = ()
    plaintext: bool = False
    original_port: int | None = None

    def to_json(self) -> str:
        """One JSON line (stable keys in field order; enum values as their label strings).

        Written once per connection: the dict is built field by field rather
        than by ``dataclasses.asdict``, which deep-copies through reflection.
        """
        data: dict[str, Any] = {
            "event": "connection", "listener": self.listener, "direction": self.direction.value,
            "peer_id": self.peer_id, "decision": self.decision.value if self.decision is not None else None,
            "rule": self.rule, "reason": self.reason.value if self.reason is not None else None, "detail": self.detail,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "duration": round(self.duration, 6),
            "close_reason": self.close_reason.value, "tls_version": self.tls_version, "cipher": self.cipher,
            "resumed": self.resumed, "start": self.start, "audit_denies": list(self.audit_denies),
            "plaintext": self.plaintext, "original_port": self.original_port,
        }
        return json.dumps(data, separators=(",", ":"))


def close_reason_for_deadline(kind_value: str) -> CloseReason:
    """Map a DeadlineKind value to the reason a connection closes with."""
    return {
        "handshake": CloseReason.HANDSHAKE_FAILED,
        "connect": CloseReason.UPSTREAM_CONNECT_FAILED,
        "idle": CloseReason.IDLE_TIMEOUT,
        "max_lifetime": CloseReason.MAX_LIFETIME,
        "peer_cert_expired": CloseReason.PEER_CERT_EXPIRED,
    }[kind_value]
