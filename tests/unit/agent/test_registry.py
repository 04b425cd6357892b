"""Selectors and entry matching: all of an entry's selectors must be observed."""

from __future__ import annotations

import pytest

from proxy.agent.registry import Entry, Registry, Selector, format_selectors
from proxy.spiffe.id import SpiffeId


def _entry(i: int, sid: str, *selectors: str) -> Entry:
    return Entry(spiffe_id=SpiffeId.parse(sid), selectors=frozenset(Selector.parse(s) for s in selectors), index=i)


def _observed(*selectors: str) -> frozenset[Selector]:
    return frozenset(Selector.parse(s) for s in selectors)


def test_entry_matches_only_when_every_selector_is_observed() -> None:
    entry = _entry(0, "spiffe://a.org/x", "unix:uid:1000", "unix:path:/bin/x")
    assert entry.matches(_observed("unix:uid:1000", "unix:path:/bin/x", "unix:gid:1"))
    assert not entry.matches(_observed("unix:uid:1000"))


def test_workload_matching_several_entries_gets_them_in_file_order_without_duplicate_ids() -> None:
    registry = Registry((
        _entry(0, "spiffe://a.org/first", "unix:uid:1"),
        _entry(1, "spiffe://a.org/other", "unix:uid:2"),
        _entry(2, "spiffe://a.org/second", "unix:gid:5"),
        _entry(3, "spiffe://a.org/first", "unix:gid:5"),
    ))
    got = registry.match(_observed("unix:uid:1", "unix:gid:5"))
    assert [str(e.spiffe_id) for e in got] == ["spiffe://a.org/first", "spiffe://a.org/second"]
    assert registry.match(_observed("unix:uid:9")) == []


def test_selector_value_may_contain_colons() -> None:
    assert Selector.parse("unix:cgroup:/system.slice/a:b.service").value == "/system.slice/a:b.service"


@pytest.mark.parametrize("text, rule", [
    ("unix:uid", "expected type:key:value"),
    ("docker:label:a", "unknown type"),
    ("unix:pid:1", "unknown unix key"),
    ("unix:uid:-1", "decimal user id"),
    ("unix:path:relative/x", "absolute path"),
    ("unix:sha256:ABC", "64 lowercase hex"),
    ("unix:user: root", "a user name"),
])
def test_invalid_selectors_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ValueError) as err:
        Selector.parse(text)
    assert text in str(err.value) and rule in str(err.value)


def test_selectors_are_listed_uid_first_for_operators() -> None:
    text = format_selectors(_observed("unix:sha256:" + "a" * 64, "unix:path:/x", "unix:gid:0", "unix:uid:0"))
    assert text == f"unix:uid:0, unix:gid:0, unix:path:/x, unix:sha256:{'a' * 64}"
