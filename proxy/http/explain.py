"""``policy explain --method --path`` and ``/policy/explain?method=&path=``: a request's decision, offline.

The path goes through the same normalization as on the data path, so the
explanation is about the path the policy would really see (``/./admin``
is explained as ``/admin``); a path the data path would refuse is an error.
"""

from __future__ import annotations

from proxy.http.normalize import normalize_target
from proxy.policy.evaluate import Decision, PolicySet
from proxy.policy.http_match import RequestView


def explain_request(policies: PolicySet, policy_name: str, peer: str, method: str | None,
                    path: str | None) -> Decision:
    """The decision for ``method path`` from ``peer`` (GET and / stand in for what is not given).

    Raises:
        HttpRequestError: the path cannot be normalized (the data path answers 400).
        InvalidSpiffeIdError: ``peer`` is not a SPIFFE ID.
    """
    target = normalize_target(path or "/")
    return policies.evaluate_request(policy_name, peer, RequestView.of(method or "GET", target.path))
