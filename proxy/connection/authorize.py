"""Inbound authorization: the peer's SPIFFE ID against the listener's policy.

Runs after verification and before a single byte reaches the app. The
evaluator is looked up per connection (the caller passes the current one),
so a policy reload applies to new connections and leaves established ones
alone.
"""

from __future__ import annotations

from typing import Callable

from proxy.connection.events import Authorized, DecisionLike, Denied

#: Evaluates one peer SPIFFE ID; proxy.policy's PolicySet.evaluate bound to a listener fits.
Authorizer = Callable[[str], DecisionLike]


def authorize(now: float, peer_id: str, evaluate: Authorizer) -> Authorized | Denied:
    """The Authorized or Denied event for ``peer_id`` (default deny is the evaluator's)."""
    decision = evaluate(peer_id)
    return Authorized(now, decision) if decision.allowed else Denied(now, decision)
