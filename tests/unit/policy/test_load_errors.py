"""Every policy load error names file:line:field and the rule; nothing half-built survives."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.policy import load_policy_file, load_policy_text


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_policy_text(text, "policy.yaml")
    return info.value


@pytest.mark.parametrize("text, line, field, detail", [
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x\n", 5, "", "YAML syntax error"),
    ("policy:\n  api: []\n", 1, "policy", "unknown key"),
    ("{}\n", 1, "policies", "is required"),
    ("policies: [a]\n", 1, "policies", "expected a mapping"),
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x]\n      mdoe: audit\n",
     5, "policies.api[0].mdoe", "unknown key (did you mean 'mode'?"),
    ("policies:\n  api:\n    - name: a\n      alow: [spiffe://e.org/x]\n",
     4, "policies.api[0].alow", "unknown key (did you mean 'allow'?"),
    ("policies:\n  api:\n    - name: a\n      allow: spiffe://e.org/x\n",
     4, "policies.api[0].allow", "expected a list of peer patterns"),
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x, 7]\n",
     4, "policies.api[0].allow[1]", "expected a SPIFFE ID pattern"),
    ("policies:\n  api:\n    - name: a\n      allow:\n        - spiffe://e.org/x\n        - spiffe://Example.org/x\n",
     6, "policies.api[0].allow[1]",
     "Invalid SPIFFE ID 'spiffe://Example.org/x': trust domain characters are limited"),
    ("policies:\n  api:\n    - name: a\n      allow: ['spiffe://e.org/ab*']\n",
     4, "policies.api[0].allow[0]", "mixes '*' with other characters"),
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x]\n    - name: a\n      deny: [spiffe://e.org/y]\n",
     5, "policies.api[1].name", "duplicate rule name 'a' in policy 'api' (first at line 3)"),
    ("policies:\n  api:\n    - name: a\n      allow: []\n",
     4, "policies.api[0].allow", "must list at least one peer pattern"),
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x]\n      deny: [spiffe://e.org/y]\n",
     5, "policies.api[0].deny", "exactly one of allow or deny"),
    ("policies:\n  api:\n    - name: a\n      mode: audit\n",
     3, "policies.api[0]", "needs allow: or deny:"),
    ("policies:\n  api:\n    - allow: [spiffe://e.org/x]\n", 3, "policies.api[0].name", "is required"),
    ("policies:\n  api:\n    - name: a b\n      allow: [spiffe://e.org/x]\n",
     3, "policies.api[0].name", "invalid rule name 'a b'"),
    ("policies:\n  'bad name': []\n", 2, "policies.bad name", "invalid policy name"),
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x]\n      mode: dry-run\n",
     5, "policies.api[0].mode", "expected one of enforce, audit"),
    ("policies:\n  api:\n    - name: a\n      allow: [spiffe://e.org/x]\n      mode: audit\n",
     5, "policies.api[0].mode", "audit mode applies to deny rules only"),
    ("policies:\n  api:\n    - name: a\n      allow: [{trust_domain: Example.org}]\n",
     4, "policies.api[0].allow[0]", "Invalid trust domain 'Example.org'"),
    ("policies:\n  api:\n    - name: a\n      allow: [{trust_domian: e.org}]\n",
     4, "policies.api[0].allow[0].trust_domian", "unknown key"),
    ("policies:\n  api:\n    - just-a-string\n", 3, "policies.api[0]", "expected a rule"),
    ("policies:\n  api: {name: a}\n", 2, "policies.api", "expected a list of rules"),
    ("policies:\n  api: []\n  api: []\n", 3, "", "YAML syntax error"),
])
def test_load_error_names_file_line_field(text: str, line: int, field: str, detail: str) -> None:
    err = error_of(text)
    assert (err.file, err.line, err.field) == ("policy.yaml", line, field), str(err)
    assert detail in err.detail, str(err)
    assert str(err).startswith(f"policy.yaml:{line}: ")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy_file(tmp_path / "missing.yaml")


def test_error_message_format_matches_the_docs() -> None:
    err = error_of("policies:\n  api:\n    - name: x\n      allow: [spiffe://e.org/a]\n"
                   "    - name: y\n      allow: [spiffe://e.org/b]\n      deny: [spiffe://e.org/c]\n"
                   "    - name: z\n      allow: [spiffe://Example.org/x]\n")
    # the first problem in file order is reported; the set is never built
    assert str(err).startswith("policy.yaml:7: policies.api[1].deny: ")


def test_example_policy_loads() -> None:
    root = Path(__file__).resolve().parents[3]
    ps = load_policy_file(root / "examples" / "policy.yaml")
    assert "api" in ps and ps.rule_count() >= 4
