"""Read ``policy.yaml`` into a PolicySet, all or nothing.

Every problem is a ConfigError naming file:line:field and the rule broken
(syntax, unknown key, wrong type, invalid pattern, duplicate rule name,
empty pattern list, a rule with both or neither of allow/deny, audit mode on
an allow rule). The PolicySet is built only after the whole file validated,
so a bad file can never yield half a policy: a reload keeps the last good one.

Policy and rule names must match ``[A-Za-z0-9._-]+``: they are metric label
values and log fields, so they stay short and shell/URL-safe.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy.yamlfields import Section, load_yaml_file, load_yaml_text
from proxy.errors import ConfigError
from proxy.policy.evaluate import PolicySet
from proxy.policy.http_load import read_http_match
from proxy.policy.match import (PatternError, PeerMatcher, TrustDomainPattern, compile_id_pattern,
                                compile_matcher, compile_trust_domain)
from proxy.policy.model import Policy, Rule, RuleAction, RuleMode

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
RULE_KEYS = ("name", "allow", "deny", "mode", "http")
_NAME_RULE = "names are 1-128 characters from letters, digits, '.', '_' and '-'"


def load_policy_file(path: str | Path) -> PolicySet:
    """Load and validate a policy file.

    Raises:
        ConfigError: the file cannot be read or is invalid (file:line:field).
    """
    doc, file = load_yaml_file(path)
    return build_policy_set(doc, file)


def load_policy_text(text: str, file: str = "<string>") -> PolicySet:
    """Load and validate policy YAML given as text (``file`` names it in errors).

    Raises:
        ConfigError: the text is invalid.
    """
    return build_policy_set(load_yaml_text(text, file), file)


def build_policy_set(doc: Any, file: str) -> PolicySet:
    """Validate a parsed policy document and build the PolicySet."""
    root = Section.root(doc, file)
    reject_unknown(root, ("policies",), "a policy file has: policies")
    section = root.take_section("policies", required=True)
    assert section is not None  # required=True raised otherwise
    policies: dict[str, Policy] = {}
    for key in list(section.data):
        if not isinstance(key, str) or not NAME_RE.fullmatch(key):
            raise ConfigError(file, section.line_of(str(key)), section.field(str(key)),
                              f"invalid policy name {key!r}: {_NAME_RULE}")
        policies[key] = _policy(section, key)
    section.finish()
    root.finish()
    return PolicySet(policies=MappingProxyType(policies), file=file)


def _policy(section: Section, name: str) -> Policy:
    value = section.data[name]
    if value is not None and not isinstance(value, list):
        raise section.error(name, f"expected a list of rules, got {value!r}")
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for i, item in enumerate(section.take_list(name)):
        if not isinstance(item, Section):
            raise ConfigError(section.file, section.item_line(name, i), f"{section.field(name)}[{i}]",
                              f"expected a rule (a mapping with name and allow or deny), got {item!r}")
        rule = _rule(item)
        if rule.name in seen:
            raise item.error("name", f"duplicate rule name {rule.name!r} in policy {name!r}"
                             f" (first at line {seen[rule.name].line})")
        seen[rule.name] = rule
        rules.append(rule)
    return Policy.of(name, tuple(rules))


def _check_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"invalid rule name {value!r}: {_NAME_RULE}")
    return value


def reject_unknown(section: Section, known: tuple[str, ...], hint: str) -> None:
    """Report an unknown key before any "is required": a typo is the likelier cause."""
    for key in section.data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
            mean = f"did you mean {close[0]!r}? " if close else ""
            raise section.error(str(key), f"unknown key ({mean}{hint})")


def _rule(item: Section) -> Rule:
    reject_unknown(item, RULE_KEYS, "a rule has: name, allow or deny, mode, http")
    name = item.take("name", str, required=True, check=_check_name)
    if item.has("allow") and item.has("deny"):
        raise item.error("deny", "a rule has exactly one of allow or deny; split it into two rules")
    if not item.has("allow") and not item.has("deny"):
        raise ConfigError(item.file, item.line, item.path,
                          f"rule {name!r} needs allow: or deny: (a list of peer patterns)")
    action = RuleAction.ALLOW if item.has("allow") else RuleAction.DENY
    peers = read_peer_patterns(item, action.value)
    mode = item.take("mode", str, default=RuleMode.ENFORCE,
                     check=lambda v: _enum_value(RuleMode, v))
    if mode is RuleMode.AUDIT and action is RuleAction.ALLOW:
        raise item.error("mode", "audit mode applies to deny rules only: an allow rule either grants or not;"
                         " to dry-run a restriction, add it as a deny rule with mode: audit")
    http = read_http_match(item)
    item.finish()
    return Rule(name=name, action=action, mode=mode, peers=peers, file=item.file, line=item.line, http=http)


def _enum_value(kind: Any, value: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"expected one of {', '.join(m.value for m in kind)}, got {value!r}") from None


def read_peer_patterns(section: Section, key: str, *, single_ok: bool = False) -> PeerMatcher:
    """Read ``key`` as a non-empty list of peer patterns and compile it.

    Each item is a SPIFFE ID pattern string or a ``{trust_domain: NAME}``
    mapping. With ``single_ok`` (outbound ``expect``) one bare pattern or
    mapping is accepted as a list of one. Errors name the item's line and index.

    Raises:
        ConfigError: an item is invalid, or the list is empty.
    """
    raw = section.data.get(key)
    if single_ok and isinstance(raw, (str, dict)):
        section.take(key, (str, dict))  # marks the key as read
        fake = Section({key: [raw]}, section.file, section.path, section.line_of(key))
        return _compile_items(fake, key, fake.take_list(key), single=True)
    if raw is not None and not isinstance(raw, list):
        raise section.error(key, f"expected a list of peer patterns, got {raw!r}")
    items = section.take_list(key)
    if not items:
        raise section.error(key, "must list at least one peer pattern (an empty list would match nobody)")
    return _compile_items(section, key, items, single=False)


def _compile_items(section: Section, key: str, items: list[Any], *, single: bool) -> PeerMatcher:
    parsed: list[str | TrustDomainPattern] = []
    for i, item in enumerate(items):
        field = section.field(key) if single else f"{section.field(key)}[{i}]"
        line = section.line_of(key) if single else section.item_line(key, i)
        try:
            if isinstance(item, Section):
                reject_unknown(item, ("trust_domain",), "a pattern mapping is {trust_domain: NAME}")
                name = item.take("trust_domain", str, required=True)
                item.finish()
                parsed.append(TrustDomainPattern(compile_trust_domain(name)))
            elif isinstance(item, str):
                compile_id_pattern(item)
                parsed.append(item)
            else:
                raise PatternError(f"expected a SPIFFE ID pattern or {{trust_domain: NAME}}, got {item!r}")
        except PatternError as exc:
            raise ConfigError(section.file, line, field, str(exc)) from None
    return compile_matcher(parsed)
