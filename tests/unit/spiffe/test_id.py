"""SPIFFE ID and trust domain rules (SPIFFE-ID.md §2), one behaviour per test.

Each ID rule runs on both twins (``impl``): the compiled engine must accept
and reject exactly what the Python core does, for the same rule.
"""

from __future__ import annotations

import pytest

from proxy.errors import InvalidSpiffeIdError, InvalidTrustDomainError
from proxy.spiffe import id as rules
from proxy.spiffe.id import SpiffeId, TrustDomain


def _rejects(impl: object, value: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        impl.parse_spiffe_id(value)  # type: ignore[attr-defined]
    assert info.value.rule == rule
    assert info.value.value == value


def test_accepts_id_with_path(impl) -> None:
    assert impl.parse_spiffe_id("spiffe://example.org/ns/prod/sa/web") == ("example.org", "/ns/prod/sa/web")


def test_accepts_trust_domain_id_without_path(impl) -> None:
    assert impl.parse_spiffe_id("spiffe://example.org") == ("example.org", "")


def test_accepts_every_allowed_character(impl) -> None:
    td = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
    path = "/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
    assert impl.parse_spiffe_id(f"spiffe://{td}{path}") == (td, path)


def test_accepts_ipv4_trust_domain(impl) -> None:
    assert impl.parse_spiffe_id("spiffe://10.0.0.1/x") == ("10.0.0.1", "/x")


def test_accepts_segments_made_of_dots_beyond_two(impl) -> None:
    assert impl.parse_spiffe_id("spiffe://td/.../a.b") == ("td", "/.../a.b")


def test_path_is_case_sensitive(impl) -> None:
    assert impl.parse_spiffe_id("spiffe://td/Web")[1] == "/Web"


def test_rejects_empty_string(impl) -> None:
    _rejects(impl, "", rules.EMPTY)


@pytest.mark.parametrize("value", ["SPIFFE://td/x", "Spiffe://td/x", "https://td/x", "spiffe:/td/x",
                                   "spiffe:td/x", "td/x", "://td/x", " spiffe://td/x", "spiffe//td/x"])
def test_rejects_missing_or_wrong_scheme(impl, value: str) -> None:
    _rejects(impl, value, rules.BAD_SCHEME)


@pytest.mark.parametrize("value", ["spiffe://", "spiffe:///path"])
def test_rejects_missing_trust_domain(impl, value: str) -> None:
    _rejects(impl, value, rules.TD_EMPTY)


@pytest.mark.parametrize("value", ["spiffe://Foo/x", "spiffe://example.ORG/x", "spiffe://exAmple.org"])
def test_rejects_uppercase_trust_domain(impl, value: str) -> None:
    _rejects(impl, value, rules.TD_CHARS)


def test_rejects_trust_domain_with_port(impl) -> None:
    _rejects(impl, "spiffe://example.org:8443/x", rules.TD_PORT)


def test_rejects_trust_domain_with_userinfo(impl) -> None:
    _rejects(impl, "spiffe://user@example.org/x", rules.TD_USERINFO)


def test_rejects_percent_encoded_trust_domain(impl) -> None:
    _rejects(impl, "spiffe://ex%61mple.org/x", rules.TD_PERCENT)


@pytest.mark.parametrize("char", ["!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=", "[", "]", " ",
                                  "\n", "\t", "\x00", "é", "\u0131", "~"])
def test_rejects_trust_domain_with_disallowed_character(impl, char: str) -> None:
    _rejects(impl, f"spiffe://exam{char}ple/x", rules.TD_CHARS)


def test_rejects_ipv6_trust_domain(impl) -> None:
    _rejects(impl, "spiffe://[::1]/x", rules.TD_CHARS)


@pytest.mark.parametrize("value", ["spiffe://td?x=1", "spiffe://td/a?x=1", "spiffe://td/a/?"])
def test_rejects_query(impl, value: str) -> None:
    _rejects(impl, value, rules.QUERY)


@pytest.mark.parametrize("value", ["spiffe://td#f", "spiffe://td/a#f"])
def test_rejects_fragment(impl, value: str) -> None:
    _rejects(impl, value, rules.FRAGMENT)


@pytest.mark.parametrize("value", ["spiffe://td/a//b", "spiffe://td//a"])
def test_rejects_empty_path_segment(impl, value: str) -> None:
    _rejects(impl, value, rules.PATH_EMPTY_SEGMENT)


@pytest.mark.parametrize("value", ["spiffe://td/", "spiffe://td/a/", "spiffe://td/a/b/"])
def test_rejects_trailing_slash(impl, value: str) -> None:
    _rejects(impl, value, rules.PATH_TRAILING_SLASH)


@pytest.mark.parametrize("value", ["spiffe://td/.", "spiffe://td/..", "spiffe://td/a/./b", "spiffe://td/a/../b",
                                   "spiffe://td/a/.."])
def test_rejects_dot_segments(impl, value: str) -> None:
    _rejects(impl, value, rules.PATH_DOT_SEGMENT)


def test_rejects_percent_encoded_path(impl) -> None:
    _rejects(impl, "spiffe://td/a%20b", rules.PATH_PERCENT)


@pytest.mark.parametrize("char", ["!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=", ":", "@", " ", "\x00",
                                  "é", "\u212a", "~", "\\"])
def test_rejects_path_with_disallowed_character(impl, char: str) -> None:
    _rejects(impl, f"spiffe://td/a{char}b", rules.PATH_CHARS)


def test_rejects_trailing_newline_that_a_dollar_regex_would_accept(impl) -> None:
    _rejects(impl, "spiffe://td/a\n", rules.PATH_CHARS)
    _rejects(impl, "spiffe://td\n", rules.TD_CHARS)


def test_accepts_id_of_exactly_2048_bytes(impl) -> None:
    value = "spiffe://td/" + "a" * (2048 - len("spiffe://td/"))
    assert impl.parse_spiffe_id(value)[0] == "td"


def test_rejects_id_longer_than_2048_bytes(impl) -> None:
    _rejects(impl, "spiffe://td/" + "a" * (2049 - len("spiffe://td/")), rules.TOO_LONG)


def test_counts_length_in_utf8_bytes_not_characters(impl) -> None:
    _rejects(impl, "spiffe://td/" + "é" * 1100, rules.TOO_LONG)


def test_accepts_trust_domain_of_255_bytes(impl) -> None:
    assert impl.parse_spiffe_id("spiffe://" + "a" * 255 + "/x")[0] == "a" * 255


def test_rejects_trust_domain_longer_than_255_bytes(impl) -> None:
    _rejects(impl, "spiffe://" + "a" * 256 + "/x", rules.TD_TOO_LONG)


def test_reports_the_first_broken_rule_left_to_right(impl) -> None:
    _rejects(impl, "spiffe://Td/a//b", rules.TD_CHARS)
    _rejects(impl, "spiffe://td/a//b/../%", rules.PATH_EMPTY_SEGMENT)
    _rejects(impl, "spiffe://td/a%/..", rules.PATH_PERCENT)


def test_error_message_names_input_and_rule() -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.parse("spiffe://Foo/x")
    assert str(info.value) == ("Invalid SPIFFE ID 'spiffe://Foo/x': trust domain characters are limited to "
                               "lowercase letters, numbers, dots, dashes, and underscores")


def test_spiffe_id_round_trips_through_str() -> None:
    sid = SpiffeId.parse("spiffe://example.org/ns/web")
    assert str(sid) == "spiffe://example.org/ns/web"
    assert sid == SpiffeId.from_parts("example.org", "/ns/web")
    assert sid == SpiffeId.from_parts(TrustDomain.parse("example.org"), "/ns/web")


def test_from_parts_rejects_path_without_leading_slash() -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.from_parts("example.org", "ns/web")
    assert info.value.rule == rules.PATH_NO_LEADING_SLASH


def test_from_parts_rejects_bad_segments() -> None:
    with pytest.raises(InvalidSpiffeIdError):
        SpiffeId.from_parts("example.org", "/a/../b")


def test_constructor_validates_like_parse() -> None:
    with pytest.raises(InvalidSpiffeIdError):
        SpiffeId(trust_domain=TrustDomain(name="td"), path="/a/")
    with pytest.raises(InvalidTrustDomainError):
        TrustDomain(name="TD")


def test_membership_is_by_trust_domain() -> None:
    sid = SpiffeId.parse("spiffe://foo.test/web")
    assert sid.is_member_of(TrustDomain.parse("foo.test"))
    assert not sid.is_member_of(TrustDomain.parse("bar.test"))
    assert not SpiffeId.parse("spiffe://foo.test.evil/web").is_member_of(TrustDomain.parse("foo.test"))


def test_root_id_is_flagged() -> None:
    assert SpiffeId.parse("spiffe://td").is_root
    assert not SpiffeId.parse("spiffe://td/x").is_root


def test_ids_are_hashable_and_ordered() -> None:
    ids = {SpiffeId.parse("spiffe://b/x"), SpiffeId.parse("spiffe://a/y"), SpiffeId.parse("spiffe://a/y")}
    assert [str(i) for i in sorted(ids)] == ["spiffe://a/y", "spiffe://b/x"]


# --- trust domains -------------------------------------------------------------


@pytest.mark.parametrize("value", ["example.org", "spiffe://example.org"])
def test_trust_domain_accepts_name_or_id(value: str) -> None:
    td = TrustDomain.parse(value)
    assert td.name == "example.org"
    assert str(td) == "example.org"
    assert td.id_string() == "spiffe://example.org"
    assert td.spiffe_id() == SpiffeId.parse("spiffe://example.org")


@pytest.mark.parametrize(("value", "rule"), [
    ("", rules.TD_EMPTY),
    ("Example.org", rules.TD_CHARS),
    ("example.org:443", rules.TD_PORT),
    ("me@example.org", rules.TD_USERINFO),
    ("ex%61mple.org", rules.TD_PERCENT),
    ("a" * 256, rules.TD_TOO_LONG),
    ("example.org\n", rules.TD_CHARS),
    ("SPIFFE://example.org", rules.BAD_SCHEME),
    ("https://example.org", rules.BAD_SCHEME),
    ("spiffe://example.org/web", rules.TD_HAS_PATH),
    ("spiffe://example.org/", rules.PATH_TRAILING_SLASH),
])
def test_trust_domain_rejects(value: str, rule: str) -> None:
    with pytest.raises(InvalidTrustDomainError) as info:
        TrustDomain.parse(value)
    assert info.value.rule == rule
    assert str(info.value).startswith(f"Invalid trust domain {value!r}: ")
