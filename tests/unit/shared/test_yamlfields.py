"""The strict YAML reader every loader uses: each error names file:line:field."""

from __future__ import annotations

import pytest

from proxy.config.durations import format_duration, parse_duration
from proxy.yamlfields import Section, load_yaml_file, load_yaml_text
from proxy.errors import ConfigError

DOC = """\
name: api
limits:
  timeout: 5s
  count: 3
items:
  - a: 1
  - b: 2
"""


def _root(text: str = DOC) -> Section:
    return Section.root(load_yaml_text(text, "s.yaml"), "s.yaml")


def test_unknown_key_is_rejected_with_its_line() -> None:
    root = _root(DOC + "extra: 1\n")
    root.take("name", str)
    root.take_section("limits")
    root.take_list("items")
    with pytest.raises(ConfigError) as info:
        root.finish()
    assert (info.value.file, info.value.line, info.value.field) == ("s.yaml", 8, "extra")


def test_wrong_type_names_nested_field_and_line() -> None:
    limits = _root().take_section("limits")
    assert limits is not None
    with pytest.raises(ConfigError) as info:
        limits.take("count", str)
    assert str(info.value) == "s.yaml:4: limits.count: expected a string, got 3"


def test_bool_is_not_accepted_where_an_integer_is_expected() -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        _root("n: true\n").take("n", int)


def test_missing_required_field_is_reported() -> None:
    with pytest.raises(ConfigError, match="listen: is required"):
        _root().take("listen", str, required=True)


def test_list_items_carry_their_own_line_and_index() -> None:
    items = _root().take_list("items")
    assert [i.line for i in items] == [6, 7]
    with pytest.raises(ConfigError) as info:
        items[1].take("b", str)
    assert info.value.field == "items[1].b" and info.value.line == 7


def test_check_converts_or_reports_at_the_field() -> None:
    limits = _root().take_section("limits")
    assert limits is not None
    assert limits.take("timeout", str, check=parse_duration) == 5.0
    bad = _root("t: 5 parsecs\n")
    with pytest.raises(ConfigError, match=r"s.yaml:1: t: invalid duration"):
        bad.take("t", str, check=parse_duration)


def test_syntax_error_and_duplicate_key_name_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml_text("a: 1\nb: [\n", "x.yaml")
    assert info.value.file == "x.yaml" and info.value.line is not None
    with pytest.raises(ConfigError, match="duplicate key"):
        load_yaml_text("a: 1\na: 2\n", "x.yaml")


def test_unreadable_file_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml_file(tmp_path / "absent.yaml")


def test_durations_accept_compound_units_and_reject_junk() -> None:
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("250ms") == 0.25
    assert format_duration(90) == "1m30s"
    for junk in ("", "5", "5x", "m5", True, -1):
        with pytest.raises(ValueError):
            parse_duration(junk)  # type: ignore[arg-type]
