"""The pure evaluator: (policy set, listener's policy name, peer ID) -> Decision.

Called once per connection (per request later), so it allocates little: the
peer is split once, rules are pre-split into deny and allow lists, patterns
are pre-compiled (see ``proxy.policy.match``). Nothing is cached, so memory
does not grow with the number of distinct peers. The semantics are listed in
``proxy.policy.model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, NamedTuple, Sequence

from proxy.errors import DenyReason
from proxy.policy.http_match import RequestView
from proxy.policy.match import PeerView
from proxy.policy.model import Policy, Rule, RuleMode
from proxy.spiffe.id import SpiffeId


class Decision(NamedTuple):
    """The outcome of one authorization, with everything needed to explain it.

    A NamedTuple rather than a frozen dataclass: one is built per connection
    and tuple construction costs a fraction of a frozen dataclass's
    ``object.__setattr__`` per field. Equally immutable.

    Attributes:
        allowed: True when the peer may proceed.
        rule: name of the deciding rule; None for a default deny.
        reason: why it was denied (None when allowed); also a metric label.
        audit_denies: names of audit-mode deny rules that matched ("would deny").
        pattern: the pattern (as written) that matched in the deciding rule, or None.
        policy: the policy name that was evaluated.
        peer: the peer ID as a string.
        where: ``file:line`` of the deciding rule, or None.
        request: ``METHOD /path`` when a request was decided, else "".
    """

    allowed: bool
    rule: str | None
    reason: DenyReason | None
    audit_denies: tuple[str, ...] = ()
    pattern: str | None = None
    policy: str = ""
    peer: str = ""
    where: str | None = None
    request: str = ""

    @property
    def explanation(self) -> str:
        """One sentence for logs and ``policy explain`` (built only when asked for)."""
        who = f"{self.request} from {self.peer}" if self.request else self.peer
        if self.reason is DenyReason.NO_POLICY:
            text = f"denied {who}: there is no policy {self.policy!r} (default deny)"
        elif self.rule is None:
            text = f"denied {who}: no allow rule of policy {self.policy!r} matches (default deny)"
        else:
            verb, kind = ("allowed", "allow") if self.allowed else ("denied", "deny")
            text = (f"{verb} {who} by {kind} rule {self.rule!r} of policy {self.policy!r}"
                    f" ({self.where}): it matches {self.pattern}")
        return text + _audit_note(self.audit_denies)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields for access logs, the admin explain endpoint and ``policy explain --json``."""
        return {"policy": self.policy, "peer": self.peer, "allowed": self.allowed, "rule": self.rule,
                "reason": self.reason.value if self.reason is not None else None, "pattern": self.pattern,
                "where": self.where, "audit_denies": list(self.audit_denies), "explanation": self.explanation,
                **({"request": self.request} if self.request else {})}


def _audit_note(audit: tuple[str, ...]) -> str:
    if not audit:
        return ""
    names = ", ".join(repr(a) for a in audit)
    return f"; audit rule{'s' if len(audit) > 1 else ''} {names} would have denied it (not enforced)"


def evaluate_policy(policy: Policy | None, name: str, peer: SpiffeId | str | PeerView) -> Decision:
    """Decide for one peer against one policy (None: the listener's policy does not exist).

    Raises:
        InvalidSpiffeIdError: ``peer`` is a string and not a valid SPIFFE ID.
    """
    view = peer if isinstance(peer, PeerView) else PeerView.of(peer)
    if policy is None:
        return Decision(False, None, DenyReason.NO_POLICY, (), None, name, view.text)
    return _decide(policy.deny_rules, policy.allow_rules, name, view)


def _decide(deny_rules: Sequence[Rule], allow_rules: Sequence[Rule], name: str, view: PeerView) -> Decision:
    """Deny rules first (audit ones only noted), then the first matching allow rule; else no match."""
    audit: tuple[str, ...] = ()
    for rule in deny_rules:
        pattern = rule.peers.match(view)
        if pattern is None:
            continue
        if rule.mode is RuleMode.AUDIT:
            audit += (rule.name,)
            continue
        return Decision(False, rule.name, DenyReason.DENY_RULE, audit, pattern, name, view.text, rule.where)
    for rule in allow_rules:
        pattern = rule.peers.match(view)
        if pattern is not None:
            return Decision(True, rule.name, None, audit, pattern, name, view.text, rule.where)
    return Decision(False, None, DenyReason.NO_MATCHING_RULE, audit, None, name, view.text)


def admit_http_peer(policy: Policy | None, name: str, peer: SpiffeId | str | PeerView) -> Decision:
    """The connection-level verdict on a ``protocol: http`` listener (semantics: model.py, rule 6).

    Only deny rules without ``http:`` refuse the connection here; any allow
    rule whose peers match admits it (its requests are decided one by one).
    """
    view = peer if isinstance(peer, PeerView) else PeerView.of(peer)
    if policy is None:
        return Decision(False, None, DenyReason.NO_POLICY, (), None, name, view.text)
    return _decide(policy.admit_deny_rules, policy.request_allow_rules, name, view)


def evaluate_request(policy: Policy | None, name: str, peer: SpiffeId | str | PeerView,
                     request: RequestView) -> Decision:
    """Decide one request: every rule, deny before allow, a rule matching peer AND request; default deny.

    The deciding pattern reported is the peer pattern, followed by the
    rule's request conditions when it has ``http:``.
    """
    view = peer if isinstance(peer, PeerView) else PeerView.of(peer)
    what = request.describe()
    if policy is None:
        return Decision(False, None, DenyReason.NO_POLICY, (), None, name, view.text, None, what)
    audit: tuple[str, ...] = ()
    for rule in policy.deny_rules:
        pattern = _rule_matches(rule, view, request)
        if pattern is None:
            continue
        if rule.mode is RuleMode.AUDIT:
            audit += (rule.name,)
            continue
        return Decision(False, rule.name, DenyReason.DENY_RULE, audit, pattern, name, view.text, rule.where, what)
    for rule in policy.request_allow_rules:
        pattern = _rule_matches(rule, view, request)
        if pattern is not None:
            return Decision(True, rule.name, None, audit, pattern, name, view.text, rule.where, what)
    return Decision(False, None, DenyReason.NO_MATCHING_RULE, audit, None, name, view.text, None, what)


def _rule_matches(rule: Rule, peer: PeerView, request: RequestView) -> str | None:
    pattern = rule.peers.match(peer)
    if pattern is None or rule.http is None:
        return pattern
    if not rule.http.matches(request):
        return None
    return f"{pattern} with {rule.http.describe()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySet:
    """Every policy of one policy file, immutable: a reload builds a new one and swaps it.

    Attributes:
        policies: policy name -> Policy, in file order.
        file: the file it was loaded from.
    """

    policies: Mapping[str, Policy]
    file: str = "<string>"

    def evaluate(self, listener_policy_name: str, peer: SpiffeId | str | PeerView) -> Decision:
        """Authorize ``peer`` under the policy named ``listener_policy_name``.

        An unknown policy name denies (``DenyReason.NO_POLICY``): fail closed.

        Raises:
            InvalidSpiffeIdError: ``peer`` is a string and not a valid SPIFFE ID.
                On the data path pass the verified ``SpiffeId``, or
                ``PeerView.trusted(id_string)`` for an ID the verifier
                already parsed (skips re-validation).
        """
        return evaluate_policy(self.policies.get(listener_policy_name), listener_policy_name, peer)

    def admit_http(self, listener_policy_name: str, peer: SpiffeId | str | PeerView) -> Decision:
        """The connection-level verdict of an HTTP listener (see ``admit_http_peer``)."""
        return admit_http_peer(self.policies.get(listener_policy_name), listener_policy_name, peer)

    def evaluate_request(self, listener_policy_name: str, peer: SpiffeId | str | PeerView,
                         request: RequestView) -> Decision:
        """Decide one request of ``peer`` under the named policy (unknown name: deny, ``no_policy``)."""
        return evaluate_request(self.policies.get(listener_policy_name), listener_policy_name, peer, request)

    def __contains__(self, name: object) -> bool:
        return name in self.policies

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies.values())

    def names(self) -> tuple[str, ...]:
        """Policy names in file order."""
        return tuple(self.policies)

    def rule_count(self) -> int:
        """Total number of rules over every policy."""
        return sum(len(p.rules) for p in self.policies.values())
