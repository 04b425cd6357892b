"""Policy semantics: default deny, deny before allow, audit mode, explanations."""

from __future__ import annotations

import pytest

from proxy.errors import DenyReason, InvalidSpiffeIdError
from proxy.policy import PeerView, PolicySet, load_policy_text
from proxy.spiffe.id import SpiffeId

POLICY = """\
policies:
  api:
    - name: frontend-reads
      allow: [spiffe://example.org/ns/prod/sa/frontend, "spiffe://example.org/ns/staging/**"]
    - name: no-batch
      deny: [spiffe://example.org/ns/prod/sa/batch]
      mode: audit
    - name: prod-all
      allow: ["spiffe://example.org/ns/prod/**"]
    - name: no-quarantine
      deny: ["spiffe://example.org/ns/*/sa/quarantined"]
    - name: partners
      allow: [{trust_domain: partner.org}]
  empty: []
"""


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policy_text(POLICY, "policy.yaml")


def test_exact_allow_reports_rule_and_pattern(policies: PolicySet) -> None:
    d = policies.evaluate("api", "spiffe://example.org/ns/prod/sa/frontend")
    assert d.allowed and d.rule == "frontend-reads" and d.reason is None
    assert d.pattern == "spiffe://example.org/ns/prod/sa/frontend"
    assert d.where == "policy.yaml:3"
    assert "allowed" in d.explanation and "frontend-reads" in d.explanation and "policy.yaml:3" in d.explanation


def test_deny_rules_run_before_allow_rules_whatever_the_file_order(policies: PolicySet) -> None:
    # prod-all (an earlier allow) matches too, but the later deny wins.
    d = policies.evaluate("api", "spiffe://example.org/ns/prod/sa/quarantined")
    assert not d.allowed
    assert (d.rule, d.reason) == ("no-quarantine", DenyReason.DENY_RULE)
    assert d.pattern == "spiffe://example.org/ns/*/sa/quarantined"
    assert "deny rule 'no-quarantine'" in d.explanation


def test_audit_deny_is_recorded_but_not_enforced(policies: PolicySet) -> None:
    d = policies.evaluate("api", "spiffe://example.org/ns/prod/sa/batch")
    assert d.allowed and d.rule == "prod-all"
    assert d.audit_denies == ("no-batch",)
    assert "audit rule 'no-batch' would have denied it (not enforced)" in d.explanation


def test_audit_deny_is_reported_on_a_default_deny_too() -> None:
    ps = load_policy_text("policies:\n  p:\n    - name: a\n      deny: [spiffe://e.org/x]\n      mode: audit\n")
    d = ps.evaluate("p", "spiffe://e.org/x")
    assert not d.allowed and d.reason is DenyReason.NO_MATCHING_RULE and d.audit_denies == ("a",)


def test_audit_denies_are_kept_when_an_enforced_deny_decides() -> None:
    ps = load_policy_text("policies:\n  p:\n"
                          "    - {name: a, deny: ['spiffe://e.org/*'], mode: audit}\n"
                          "    - {name: b, deny: ['spiffe://e.org/**']}\n")
    d = ps.evaluate("p", "spiffe://e.org/x")
    assert (d.rule, d.reason, d.audit_denies) == ("b", DenyReason.DENY_RULE, ("a",))


def test_no_matching_rule_is_a_default_deny(policies: PolicySet) -> None:
    d = policies.evaluate("api", "spiffe://example.org/ns/dev/sa/frontend")
    assert not d.allowed and d.rule is None and d.reason is DenyReason.NO_MATCHING_RULE
    assert "default deny" in d.explanation


def test_unknown_policy_denies_everyone(policies: PolicySet) -> None:
    d = policies.evaluate("nope", "spiffe://example.org/ns/prod/sa/frontend")
    assert not d.allowed and d.reason is DenyReason.NO_POLICY
    assert "there is no policy 'nope'" in d.explanation


def test_empty_policy_denies_everyone(policies: PolicySet) -> None:
    d = policies.evaluate("empty", "spiffe://example.org/ns/prod/sa/frontend")
    assert not d.allowed and d.reason is DenyReason.NO_MATCHING_RULE


def test_trust_domain_rule_matches_any_workload_of_that_domain(policies: PolicySet) -> None:
    d = policies.evaluate("api", "spiffe://partner.org/anything/at/all")
    assert d.allowed and d.rule == "partners" and d.pattern == "{trust_domain: partner.org}"
    assert not policies.evaluate("api", "spiffe://partner.org.evil/x").allowed


def test_double_star_does_not_match_its_own_prefix(policies: PolicySet) -> None:
    assert not policies.evaluate("api", "spiffe://example.org/ns/staging").allowed
    assert policies.evaluate("api", "spiffe://example.org/ns/staging/x").rule == "frontend-reads"


def test_peer_may_be_a_spiffe_id_a_string_or_a_trusted_view(policies: PolicySet) -> None:
    text = "spiffe://example.org/ns/staging/web"
    d1 = policies.evaluate("api", text)
    d2 = policies.evaluate("api", SpiffeId.parse(text))
    d3 = policies.evaluate("api", PeerView.trusted(text))
    assert d1 == d2 == d3 and d1.peer == text


def test_an_invalid_peer_string_raises_instead_of_matching(policies: PolicySet) -> None:
    with pytest.raises(InvalidSpiffeIdError):
        policies.evaluate("api", "spiffe://example.org/ns/staging/../prod")


def test_decisions_are_immutable(policies: PolicySet) -> None:
    d = policies.evaluate("api", "spiffe://example.org/ns/prod/sa/frontend")
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]


def test_policy_set_lists_names_and_counts(policies: PolicySet) -> None:
    assert policies.names() == ("api", "empty")
    assert policies.rule_count() == 5
    assert "api" in policies and "x" not in policies


def test_decision_as_dict_is_json_ready(policies: PolicySet) -> None:
    import json
    d = policies.evaluate("api", "spiffe://example.org/ns/prod/sa/batch").as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["reason"] is None and d["rule"] == "prod-all" and d["audit_denies"] == ["no-batch"]
