"""The authorization policy as plain data: named policies, each a list of rules.

``policy.yaml`` maps a policy name (what an inbound listener's ``policy:``
names) to an ordered list of rules::

    policies:
      api:
        - name: frontend-reads
          allow: [spiffe://example.org/ns/prod/sa/frontend, "spiffe://example.org/ns/staging/**"]
        - name: no-batch
          deny: [spiffe://example.org/ns/prod/sa/batch]
          mode: audit

Semantics (the README quotes this list):

1. **Default deny.** A peer is allowed only when an enforced allow rule
   matches it; a listener whose policy name is unknown denies everyone
   (reason ``no_policy``), a peer no rule matches is denied
   (``no_matching_rule``). A policy with no rules denies everyone.
2. **Deny before allow.** Every deny rule is checked before any allow rule,
   whatever their order in the file; among rules of one kind the first
   match (file order) decides, so the reported rule is predictable.
3. **A rule has exactly one of** ``allow:`` **or** ``deny:``, a non-empty
   list of peer patterns (see ``proxy.policy.match``: exact ID, ``*`` = one
   segment, trailing ``**`` = one or more segments, ``{trust_domain: NAME}``).
4. **Audit mode is for deny rules.** ``mode: audit`` on a deny rule makes it
   a dry run: a match is recorded as a "would deny" (the rule's name lands in
   ``Decision.audit_denies``, counted apart in metrics and logged) and
   evaluation goes on as if the rule were absent. ``mode: enforce`` is the
   default. An allow rule cannot be in audit mode: a dry-run allow would
   grant nothing, and an audit allow that grants would be an enforced allow
   under another name; either reading surprises someone, so it is a load error.
5. **Every decision says why**: the deciding rule's name (None for a default
   deny), a ``DenyReason`` (None when allowed), the pattern that matched,
   the audit rules that would have denied, and one sentence of explanation.

6. **Request rules.** A rule may add ``http: {methods, paths, headers}``
   (``proxy.policy.http_match``): it then matches a *request* whose peer
   matches and which meets those conditions. A rule without ``http:`` is a
   connection-level rule and keeps the meaning above. On a ``protocol:
   http`` listener the connection is admitted when no connection-level
   deny rule matches the peer and some allow rule (of either kind) matches
   it; each request is then decided over every rule (deny first, then
   allow, default deny). On a ``protocol: tcp`` listener no request is
   seen, so the safe reading is taken (Istio's): an allow rule with
   ``http:`` never allows, and a deny rule with ``http:`` denies the peer's
   whole connection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from proxy.policy.http_match import HttpMatch
from proxy.policy.match import PeerMatcher


class RuleAction(enum.Enum):
    """What a matching rule does."""

    ALLOW = "allow"
    DENY = "deny"


class RuleMode(enum.Enum):
    """Whether a rule acts (enforce) or only reports (audit; deny rules only)."""

    ENFORCE = "enforce"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One named rule of a policy.

    Attributes:
        name: unique within its policy; reported in decisions, logs and metric labels.
        action: allow or deny.
        mode: enforce, or audit (deny rules only).
        peers: the compiled peer patterns.
        file: the policy file the rule came from (for explanations).
        line: 1-based line of the rule in that file, or None.
        http: the request conditions, or None for a connection-level rule.
        where: ``file:line`` of the rule, for people (derived).
    """

    name: str
    action: RuleAction
    mode: RuleMode
    peers: PeerMatcher
    file: str = "<string>"
    line: int | None = None
    http: HttpMatch | None = None
    where: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Stored, not a property: every decision carries it, so build it once.
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        object.__setattr__(self, "where", where)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A named policy, its rules pre-split so evaluation walks only what it needs.

    Attributes:
        name: the key under ``policies:``.
        rules: every rule in file order.
        deny_rules: the deny rules (enforced and audit), file order.
        allow_rules: the allow rules a connection can be allowed by without a
            request (those without ``http:``), file order.
        request_allow_rules: every allow rule (a request is checked against all).
        admit_deny_rules: the deny rules without ``http:`` (what refuses a
            connection on an HTTP listener before any request).
    """

    name: str
    rules: tuple[Rule, ...]
    deny_rules: tuple[Rule, ...]
    allow_rules: tuple[Rule, ...]
    request_allow_rules: tuple[Rule, ...] = ()
    admit_deny_rules: tuple[Rule, ...] = ()

    @classmethod
    def of(cls, name: str, rules: tuple[Rule, ...]) -> Policy:
        """Build a policy from its rules in file order."""
        return cls(
            name=name,
            rules=rules,
            deny_rules=tuple(r for r in rules if r.action is RuleAction.DENY),
            allow_rules=tuple(r for r in rules if r.action is RuleAction.ALLOW and r.http is None),
            request_allow_rules=tuple(r for r in rules if r.action is RuleAction.ALLOW),
            admit_deny_rules=tuple(r for r in rules if r.action is RuleAction.DENY and r.http is None),
        )
