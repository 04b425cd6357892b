"""Outbound peer check: the upstream's SPIFFE ID must match ``expect``.

The engine already verified the chain by SPIFFE rules (no hostname
verification: SPIFFE replaces it). What is left is *which* workload answered:
this runs on every connection, resumed or not, so a session cached under
one identity can never stand in for another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from proxy.errors import DenyReason


class PeerMatcher(Protocol):
    """An ``expect`` matcher from the config (exact, segment glob or trust domain)."""

    def matches(self, spiffe_id: str) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ExpectDecision:
    """The outbound counterpart of a policy Decision (same attribute names)."""

    allowed: bool
    rule: str | None
    reason: DenyReason | None
    explanation: str


def check_expected_peer(peer_id: str, matcher: PeerMatcher, listener: str) -> ExpectDecision:
    """Allow the upstream only if its ID matches the listener's ``expect``."""
    rule = f"{listener}.expect"
    if matcher.matches(peer_id):
        return ExpectDecision(True, rule, None, f"{peer_id} matches expect {matcher.describe()}")
    return ExpectDecision(False, rule, DenyReason.UNEXPECTED_PEER,
                          f"upstream presented {peer_id}, expected {matcher.describe()}")
