"""Peer-ID patterns: what `*`, `**` and `{trust_domain}` match, and which patterns are refused at load."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.match import (PatternError, PeerView, TrustDomainPattern, compile_id_pattern,
                                compile_matcher)
from proxy.spiffe.id import SpiffeId


def matches(patterns: list[str | TrustDomainPattern], peer: str) -> bool:
    return compile_matcher(patterns).matches(peer)


@pytest.mark.parametrize("peer, expected", [
    ("spiffe://example.org/ns/prod/sa/web", True),
    ("spiffe://example.org/ns/prod/sa/web2", False),
    ("spiffe://example.org/ns/prod/sa", False),
    ("spiffe://example.org/ns/prod/sa/web/x", False),
    ("spiffe://other.org/ns/prod/sa/web", False),
])
def test_exact_pattern_matches_only_that_id(peer: str, expected: bool) -> None:
    assert matches(["spiffe://example.org/ns/prod/sa/web"], peer) is expected


@pytest.mark.parametrize("peer, expected", [
    ("spiffe://example.org/ns/prod/sa/web", True),
    ("spiffe://example.org/ns/dev/sa/web", True),
    ("spiffe://example.org/ns/a/b/sa/web", False),   # '*' never spans two segments
    ("spiffe://example.org/ns/sa/web", False),        # ... nor zero
    ("spiffe://example.org/ns/prod/sa/db", False),
])
def test_star_matches_exactly_one_segment(peer: str, expected: bool) -> None:
    assert matches(["spiffe://example.org/ns/*/sa/web"], peer) is expected


@pytest.mark.parametrize("peer, expected", [
    ("spiffe://example.org/ns/staging/a", True),
    ("spiffe://example.org/ns/staging/a/b/c", True),
    ("spiffe://example.org/ns/staging", False),       # '**' is one or more segments
    ("spiffe://example.org/ns/stagingx/a", False),
    ("spiffe://example.org/ns/prod/a", False),
])
def test_double_star_matches_one_or_more_trailing_segments(peer: str, expected: bool) -> None:
    assert matches(["spiffe://example.org/ns/staging/**"], peer) is expected


def test_whole_trust_domain_by_double_star_or_trust_domain_item() -> None:
    for patterns in (["spiffe://example.org/**"], [TrustDomainPattern("example.org")]):
        m = compile_matcher(patterns)
        assert m.matches("spiffe://example.org/a")
        assert m.matches("spiffe://example.org/a/b")
        assert not m.matches("spiffe://example.org")      # a root ID is no workload
        assert not m.matches("spiffe://example.org.evil/a")
        assert not m.matches("spiffe://other.org/a")


def test_match_reports_the_pattern_as_written() -> None:
    m = compile_matcher(["spiffe://e.org/a", "spiffe://e.org/b/*", TrustDomainPattern("t.org")])
    assert m.match(PeerView.of("spiffe://e.org/a")) == "spiffe://e.org/a"
    assert m.match(PeerView.of("spiffe://e.org/b/c")) == "spiffe://e.org/b/*"
    assert m.match(PeerView.of("spiffe://t.org/x")) == "{trust_domain: t.org}"
    assert m.match(PeerView.of("spiffe://e.org/c")) is None


def test_trusted_view_splits_like_the_strict_parse() -> None:
    for text in ("spiffe://e.org/a/b", "spiffe://e.org/a", "spiffe://e.org"):
        assert PeerView.trusted(text) == PeerView.of(text) == PeerView.of(SpiffeId.parse(text))


@pytest.mark.parametrize("pattern, message", [
    ("spiffe://e.org/sa/front*", "mixes '*' with other characters"),
    ("spiffe://e.org/sa/*end", "mixes '*' with other characters"),
    ("spiffe://e.org/**/sa", "'**' is allowed only as the last segment"),
    ("spiffe://*.e.org/sa", "wildcards are not allowed in the trust domain"),
    ("spiffe://*/sa", "wildcards are not allowed in the trust domain"),
    ("spiffe://e.org", "a root-path ID never matches a workload"),
    ("spiffe://Example.org/x", "trust domain characters are limited"),
    ("spiffe://e.org/a/", "trailing slash"),
    ("spiffe://e.org/a//b", "empty segments"),
    ("spiffe://e.org/*/../x", "dot segments"),
    ("spiffe://e.org/a%20b/*", "percent"),
    ("http://e.org/a", "scheme is missing or invalid"),
    ("e.org/a", "scheme is missing or invalid"),
])
def test_invalid_patterns_are_rejected_with_the_rule(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match="Invalid") as info:
        compile_id_pattern(pattern)
    assert message in str(info.value)
    assert repr(pattern) in str(info.value)


def test_invalid_trust_domain_item_is_rejected() -> None:
    with pytest.raises(PatternError, match="trust domain characters"):
        compile_matcher([TrustDomainPattern("Example.org")])
    with pytest.raises(PatternError, match="wildcards"):
        compile_matcher([TrustDomainPattern("*.org")])


SEGMENT = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
PATTERN_SEG = st.one_of(SEGMENT, st.just("*"))


@settings(max_examples=100, deadline=None)
@given(st.lists(PATTERN_SEG, min_size=1, max_size=5), st.lists(SEGMENT, min_size=1, max_size=7))
def test_star_never_matches_across_a_slash(pattern_segs: list[str], peer_segs: list[str]) -> None:
    pattern = "spiffe://example.org/" + "/".join(pattern_segs)
    peer = "spiffe://example.org/" + "/".join(peer_segs)
    got = compile_matcher([pattern]).matches(peer)
    expected = len(pattern_segs) == len(peer_segs) and all(
        p == "*" or p == s for p, s in zip(pattern_segs, peer_segs))
    assert got is expected


@settings(max_examples=100, deadline=None)
@given(st.lists(PATTERN_SEG, min_size=0, max_size=4), st.lists(SEGMENT, min_size=1, max_size=7))
def test_double_star_needs_at_least_one_more_segment(prefix: list[str], peer_segs: list[str]) -> None:
    pattern = "spiffe://example.org/" + "/".join([*prefix, "**"])
    peer = "spiffe://example.org/" + "/".join(peer_segs)
    got = compile_matcher([pattern]).matches(peer)
    expected = len(peer_segs) > len(prefix) and all(p == "*" or p == s for p, s in zip(prefix, peer_segs))
    assert got is expected


ID_ALPHABET = "abAZ09._-/:%?#@ "
NEAR_IDS = st.one_of(
    st.text(alphabet=ID_ALPHABET, max_size=30).map(lambda s: "spiffe://" + s),
    st.lists(st.sampled_from(["a", "B", ".", "..", "", "x-y", "_", "%41", "a?b"]), max_size=5).map(
        lambda segs: "spiffe://e.org/" + "/".join(segs)),
    st.text(alphabet="spifeSPIFE:/.ab", max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(NEAR_IDS)
def test_fast_peer_split_accepts_exactly_what_the_strict_parser_accepts(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except ValueError:
        with pytest.raises(ValueError):
            PeerView.of(text)
    else:
        assert PeerView.of(text) == PeerView.of(sid)


def test_fast_peer_split_respects_the_length_limits() -> None:
    ok = "spiffe://e.org/" + "a" * (2048 - len("spiffe://e.org/"))
    assert PeerView.of(ok).text == ok
    with pytest.raises(ValueError, match="2048"):
        PeerView.of(ok + "a")
    with pytest.raises(ValueError, match="255"):
        PeerView.of("spiffe://" + "a" * 256 + "/x")
    with pytest.raises(ValueError):
        PeerView.of("spiffe://e.org/a\n")
