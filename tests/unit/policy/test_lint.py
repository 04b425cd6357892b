"""`policy check` warns about allow patterns an enforced deny always overrides."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy import load_policy_text
from proxy.policy.lint import _as_glob, _glob_covers, shadowed_allows
from proxy.policy.match import PeerView


def shadowed(deny: str, allow: str, mode: str = "enforce") -> bool:
    text = (f"policies:\n  p:\n    - name: d\n      deny: [{deny}]\n      mode: {mode}\n"
            f"    - name: a\n      allow: [{allow}]\n")
    return bool(shadowed_allows(load_policy_text(text, "policy.yaml").policies["p"]))


@pytest.mark.parametrize("deny, allow, expected", [
    ("spiffe://e.org/a", "spiffe://e.org/a", True),
    ("spiffe://e.org/a", "spiffe://e.org/b", False),
    ("'spiffe://e.org/*'", "spiffe://e.org/a", True),
    ("'spiffe://e.org/**'", "spiffe://e.org/a/b", True),
    ("'spiffe://e.org/**'", "'spiffe://e.org/x/**'", True),
    ("'spiffe://e.org/x/**'", "'spiffe://e.org/x/**'", True),
    ("'spiffe://e.org/x/**'", "'spiffe://e.org/**'", False),       # allow also covers e.org/y
    ("'spiffe://e.org/x/*'", "'spiffe://e.org/x/**'", False),      # allow also covers x/a/b
    ("'spiffe://e.org/*/a'", "'spiffe://e.org/x/*'", False),
    ("'spiffe://e.org/a/*'", "'spiffe://e.org/*/*'", False),
    ("'spiffe://e.org/*/*'", "'spiffe://e.org/a/*'", True),
    ("{trust_domain: e.org}", "'spiffe://e.org/**'", True),
    ("'spiffe://e.org/**'", "{trust_domain: e.org}", True),
    ("'spiffe://e.org/a/**'", "{trust_domain: e.org}", False),
    ("{trust_domain: f.org}", "spiffe://e.org/a", False),
])
def test_shadowed_allow_detection(deny: str, allow: str, expected: bool) -> None:
    assert shadowed(deny, allow) is expected


def test_audit_denies_do_not_shadow() -> None:
    assert not shadowed("spiffe://e.org/a", "spiffe://e.org/a", mode="audit")


def test_warning_names_both_rules_and_lines() -> None:
    text = ("policies:\n  p:\n    - name: a\n      allow: [spiffe://e.org/x]\n"
            "    - name: d\n      deny: ['spiffe://e.org/*']\n")
    (warning,) = shadowed_allows(load_policy_text(text, "policy.yaml").policies["p"])
    assert "allow rule 'a'" in warning and "deny rule 'd' (policy.yaml:5)" in warning
    assert warning.startswith("policy.yaml:3:")

SEG = st.sampled_from(["a", "b", "*"])


@settings(max_examples=150, deadline=None)
@given(st.lists(SEG, max_size=3), st.booleans(), st.lists(SEG, max_size=3), st.booleans(),
       st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=3))
def test_cover_is_sound(out_segs: list[str], out_rest: bool, in_segs: list[str], in_rest: bool,
                        extra: list[str]) -> None:
    """If outer covers inner, every ID inner matches is matched by outer."""
    if not (out_segs or out_rest) or not (in_segs or in_rest):
        return
    outer = _as_glob("spiffe://e.org/" + "/".join([*out_segs, *(["**"] if out_rest else [])]))
    inner = _as_glob("spiffe://e.org/" + "/".join([*in_segs, *(["**"] if in_rest else [])]))
    if not _glob_covers(outer, inner):
        return
    for fill in ("a", "b", "c"):
        segs = tuple(fill if s == "*" else s for s in in_segs) + (tuple(extra or ["c"]) if in_rest else ())
        view = PeerView("spiffe://e.org/" + "/".join(segs), "e.org", segs)
        if inner.matches(view):
            assert outer.matches(view)
