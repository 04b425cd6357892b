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


@dataclass(frozen=True, slots=True)
class ExpectCheck:
    """What check_expected_peer returns: an ExpectDecision whose explanation is built only when read.

    It is read for a denial's record and by /policy/explain; an allowed
    connection, the common case, never pays for the text.
    """

    allowed: bool
    rule: str
    reason: DenyReason | None
    peer_id: str
    matcher: PeerMatcher

    @property
    def explanation(self) -> str:
        if self.allowed:
            return f"{self.peer_id} matches expect {self.matcher.describe()}"
        return f"upstream presented {self.peer_id}, expected {self.matcher.describe()}"


def check_expected_peer(peer_id: str, matcher: PeerMatcher, listener: str) -> ExpectCheck:
    """Allow the upstream only if its ID matches the listener's ``expect``."""
    rule = f"{listener}.expect"
    if matcher.matches(peer_id):
        return ExpectCheck(True, rule, None, peer_id, matcher)
    return ExpectCheck(False, rule, DenyReason.UNEXPECTED_PEER, peer_id, matcher)
