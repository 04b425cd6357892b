"""Request rules (``http: {methods, paths, headers}``): loading, errors, and the decision per request."""

from __future__ import annotations

import pytest

from proxy.errors import ConfigError, DenyReason
from proxy.http.normalize import normalize_target
from proxy.policy import load_policy_text
from proxy.policy.evaluate import PolicySet
from proxy.policy.http_match import RequestView

FRONTEND = "spiffe://example.org/ns/prod/sa/frontend"
BATCH = "spiffe://example.org/ns/prod/sa/batch"
OTHER = "spiffe://other.org/x"

POLICY = f"""
policies:
  api:
    - name: no-admin
      deny: ["spiffe://example.org/**"]
      http: {{paths: ["/admin/**"]}}
    - name: no-debug-header
      deny: ["spiffe://example.org/**"]
      http:
        headers: [{{name: X-Debug, present: true}}]
    - name: frontend-reads
      allow: [{FRONTEND}]
      http: {{methods: [GET, HEAD], paths: ["/v1/orders/*", "/healthz"]}}
    - name: frontend-canary
      allow: [{FRONTEND}]
      http:
        methods: [POST]
        paths: ["/v1/orders"]
        headers: [{{name: x-env, exact: canary}}, {{name: user-agent, prefix: "app/"}}]
    - name: batch-all
      allow: [{BATCH}]
"""


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policy_text(POLICY, "policy.yaml")


def request(method: str, target: str, headers: dict[str, str] | None = None) -> RequestView:
    return RequestView.of(method, normalize_target(target).path, headers)


@pytest.mark.parametrize(("peer", "method", "target", "headers", "rule", "allowed"), [
    (FRONTEND, "GET", "/v1/orders/7", None, "frontend-reads", True),
    (FRONTEND, "HEAD", "/healthz", None, "frontend-reads", True),
    (FRONTEND, "POST", "/v1/orders/7", None, None, False),          # method not in the set
    (FRONTEND, "GET", "/v1/orders/7/items", None, None, False),     # '*' is one segment
    (FRONTEND, "GET", "/v1/orders", None, None, False),
    (FRONTEND, "GET", "/healthz/x", None, None, False),             # exact is exact
    (FRONTEND, "POST", "/v1/orders", {"x-env": "canary", "user-agent": "app/2"}, "frontend-canary", True),
    (FRONTEND, "POST", "/v1/orders", {"x-env": "prod", "user-agent": "app/2"}, None, False),
    (FRONTEND, "POST", "/v1/orders", {"x-env": "canary", "user-agent": "curl/8"}, None, False),
    (FRONTEND, "GET", "/v1/orders/7", {"x-debug": "1"}, "no-debug-header", False),
    (BATCH, "DELETE", "/anything", None, "batch-all", True),        # a connection rule allows every request
    (BATCH, "GET", "/admin", None, "no-admin", False),              # '/admin/**' covers '/admin' itself
    (BATCH, "GET", "/admin/users", None, "no-admin", False),
    (BATCH, "GET", "/./admin", None, "no-admin", False),
    (BATCH, "GET", "/%61dmin/users", None, "no-admin", False),
    (BATCH, "GET", "//admin", None, "no-admin", False),
    (BATCH, "GET", "/public/../admin", None, "no-admin", False),
    (BATCH, "GET", "/administrator", None, "batch-all", True),
    (OTHER, "GET", "/healthz", None, None, False),
])
def test_requests_are_decided_by_peer_and_request(policies: PolicySet, peer: str, method: str, target: str,
                                                  headers: dict[str, str] | None, rule: str | None,
                                                  allowed: bool) -> None:
    decision = policies.evaluate_request("api", peer, request(method, target, headers))
    assert (decision.rule, decision.allowed) == (rule, allowed)
    if not allowed:
        assert decision.reason in (DenyReason.DENY_RULE, DenyReason.NO_MATCHING_RULE)
    assert decision.request == f"{method} {normalize_target(target).path}"


def test_connection_verdict_on_an_http_listener_admits_peers_some_allow_rule_names(policies: PolicySet) -> None:
    assert policies.admit_http("api", FRONTEND).allowed   # only request rules name it
    assert policies.admit_http("api", BATCH).allowed
    denied = policies.admit_http("api", OTHER)
    assert (denied.allowed, denied.reason) == (False, DenyReason.NO_MATCHING_RULE)


def test_on_a_tcp_listener_request_allow_rules_never_allow_and_request_deny_rules_deny(
        policies: PolicySet) -> None:
    # The frontend is allowed only by request rules: a TCP listener cannot check them.
    assert not policies.evaluate("api", FRONTEND).allowed
    # Batch is allowed by a connection rule, but a deny rule with http: covers it: fail closed.
    decision = policies.evaluate("api", BATCH)
    assert (decision.allowed, decision.rule) == (False, "no-admin")


def test_connection_rules_keep_todays_meaning() -> None:
    plain = load_policy_text(f"policies:\n  api:\n    - name: a\n      allow: [{BATCH}]\n")
    assert plain.evaluate("api", BATCH).allowed
    assert plain.admit_http("api", BATCH).allowed
    assert plain.evaluate_request("api", BATCH, request("GET", "/x")).allowed
    assert not plain.evaluate_request("api", FRONTEND, request("GET", "/x")).allowed


def test_connection_deny_rule_refuses_the_http_connection_before_any_request() -> None:
    p = load_policy_text(f"policies:\n  api:\n    - name: d\n      deny: [{BATCH}]\n"
                         f"    - name: a\n      allow: [{BATCH}]\n      http: {{paths: ['/**']}}\n")
    assert (p.admit_http("api", BATCH).allowed, p.admit_http("api", BATCH).rule) == (False, "d")


def test_explanation_names_the_request_and_the_conditions(policies: PolicySet) -> None:
    d = policies.evaluate_request("api", FRONTEND, request("GET", "/v1/orders/7"))
    assert "GET /v1/orders/7 from " + FRONTEND in d.explanation
    assert "methods GET,HEAD; paths /v1/orders/*,/healthz" in d.explanation
    assert d.as_dict()["request"] == "GET /v1/orders/7"


def _rule(http: str) -> str:
    return f"policies:\n  api:\n    - name: a\n      allow: [{BATCH}]\n      http:\n{http}"


@pytest.mark.parametrize(("http", "line", "field", "detail"), [
    ("        paths: ['/a/./b']\n", 6, "policies.api[0].http.paths[0]", "'.' and '..' segments never reach"),
    ("        paths: ['/a', 'b']\n", 6, "policies.api[0].http.paths[1]", "a path starts with '/'"),
    ("        paths: ['/a//b']\n", 6, "policies.api[0].http.paths[0]", "slashes are merged"),
    ("        paths: ['/a*']\n", 6, "policies.api[0].http.paths[0]", "mixes '*'"),
    ("        paths: ['/**/a']\n", 6, "policies.api[0].http.paths[0]", "only as the last segment"),
    ("        paths: ['/%61dmin']\n", 6, "policies.api[0].http.paths[0]", "%61 never reaches the policy"),
    ("        paths: ['/a%2Fb']\n", 6, "policies.api[0].http.paths[0]", "escaped slash"),
    ("        paths: []\n", 6, "policies.api[0].http.paths", "non-empty list"),
    ("        methods:\n          - GET\n          - 'G T'\n", 8, "policies.api[0].http.methods[1]",
     "invalid method"),
    ("        path: ['/a']\n", 6, "policies.api[0].http.path", "unknown key"),
    ("        headers: [{name: x, exact: a, prefix: b}]\n", 6, "policies.api[0].http.headers[0]",
     "exactly one of exact, prefix or present"),
    ("        headers: [{name: x, regex: a}]\n", 6, "policies.api[0].http.headers[0].regex", "unknown key"),
    ("        headers: [{name: 'x y', present: true}]\n", 6, "policies.api[0].http.headers[0]",
     "invalid header name"),
    ("        {}\n", 5, "policies.api[0].http", "at least one of methods, paths, headers"),
])
def test_http_conditions_errors_name_file_line_field(http: str, line: int, field: str, detail: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_text(_rule(http), "policy.yaml")
    err = info.value
    assert (err.file, err.line, err.field) == ("policy.yaml", line, field), str(err)
    assert detail in str(err)
