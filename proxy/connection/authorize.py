"""Inbound authorization: the peer's SPIFFE ID against the listener's policy.

Runs after verification and before a single byte reaches the app. The
evaluator is looked up per connection (the caller passes the current one),
so a policy reload applies to new connections and leaves established ones
alone.
"""

from __future__ import annotations

from typing import Callable

from proxy.connection.events import Authorized, DecisionLike, Denied
from proxy.connection.verify import ExpectDecision
from proxy.errors import DenyReason, SidecarError

#: Evaluates one peer SPIFFE ID; proxy.policy's PolicySet.evaluate bound to a listener fits.
Authorizer = Callable[[str], DecisionLike]


def authorize(now: float, peer_id: str, evaluate: Authorizer) -> Authorized | Denied:
    """The Authorized or Denied event for ``peer_id`` (default deny is the evaluator's)."""
    try:
        decision = evaluate(peer_id)
    except SidecarError as exc:  # an evaluator that cannot decide denies (fail closed)
        decision = ExpectDecision(False, None, DenyReason.NO_MATCHING_RULE, f"cannot evaluate {peer_id}: {exc}")
    return Authorized(now, decision) if decision.allowed else Denied(now, decision)
