"""Authorization policy: plain data, a strict loader, a pure evaluator.

The semantics (default deny, deny before allow, segment globs, audit mode)
are documented in ``proxy.policy.model`` and ``proxy.policy.match``.
"""

from proxy.policy.evaluate import Decision, PolicySet, evaluate_policy
from proxy.policy.load import build_policy_set, load_policy_file, load_policy_text, read_peer_patterns
from proxy.policy.match import PatternError, PeerMatcher, PeerView, TrustDomainPattern, compile_matcher
from proxy.policy.model import Policy, Rule, RuleAction, RuleMode

__all__ = [
    "Decision", "PatternError", "PeerMatcher", "PeerView", "Policy", "PolicySet", "Rule", "RuleAction",
    "RuleMode", "TrustDomainPattern", "build_policy_set", "compile_matcher", "evaluate_policy",
    "load_policy_file", "load_policy_text", "read_peer_patterns",
]
