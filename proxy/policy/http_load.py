"""Read a rule's ``http:`` key (methods, paths, headers) with file:line:field errors.

Kept apart from load.py so the connection-level loader stays as it was;
the conditions' meaning is in ``proxy.policy.http_match``.
"""

from __future__ import annotations

from typing import Any

from proxy.yamlfields import Section
from proxy.errors import ConfigError
from proxy.policy.http_match import (HeaderMatcher, HttpMatch, HttpPatternError, compile_header, compile_http_match,
                                     compile_method, compile_path_pattern)

HTTP_KEYS = ("methods", "paths", "headers")
HEADER_KEYS = ("name", "exact", "prefix", "present")


def read_http_match(rule: Section) -> HttpMatch | None:
    """The rule's request conditions, or None when it has no ``http:`` key.

    Raises:
        ConfigError: naming file:line:field of the first invalid item.
    """
    if not rule.has("http"):
        return None
    section = rule.take_section("http", required=True)
    assert section is not None
    for key in section.data:
        if key not in HTTP_KEYS:
            raise section.error(str(key), "unknown key (http: has methods, paths, headers)")
    if not section.data:
        raise ConfigError(rule.file, rule.line_of("http"), rule.field("http"),
                          "http: needs at least one of methods, paths, headers (drop it for a connection rule)")
    methods = _strings(section, "methods", compile_method)
    paths = _strings(section, "paths", compile_path_pattern)
    headers = _headers(section)
    section.finish()
    return compile_http_match(methods=methods, paths=paths, headers=headers)


def _strings(section: Section, key: str, check: Any) -> list[str] | None:
    if not section.has(key):
        return None
    raw = section.data.get(key)
    if not isinstance(raw, list) or not raw:
        raise section.error(key, f"expected a non-empty list, got {raw!r}")
    out: list[str] = []
    for i, item in enumerate(section.take_list(key)):
        where = (section.file, section.item_line(key, i), f"{section.field(key)}[{i}]")
        if not isinstance(item, str):
            raise ConfigError(*where, f"expected a string, got {item!r}")
        try:
            check(item)
        except HttpPatternError as exc:
            raise ConfigError(*where, str(exc)) from None
        out.append(item)
    return out


def _headers(section: Section) -> tuple[HeaderMatcher, ...]:
    if not section.has("headers"):
        return ()
    raw = section.data.get("headers")
    if not isinstance(raw, list) or not raw:
        raise section.error("headers", f"expected a non-empty list of {{name, exact|prefix|present}}, got {raw!r}")
    out: list[HeaderMatcher] = []
    for i, item in enumerate(section.take_list("headers")):
        if not isinstance(item, Section):
            raise ConfigError(section.file, section.item_line("headers", i), f"{section.field('headers')}[{i}]",
                              f"expected a mapping {{name, exact|prefix|present}}, got {item!r}")
        for key in item.data:
            if key not in HEADER_KEYS:
                raise item.error(str(key), "unknown key (a header condition has name and exact, prefix or present)")
        name = item.take("name", str, required=True)
        exact = item.take("exact", str)
        prefix = item.take("prefix", str)
        present = item.take("present", bool)
        item.finish()
        try:
            out.append(compile_header(name, exact=exact, prefix=prefix, present=present))
        except HttpPatternError as exc:
            raise ConfigError(item.file, item.line, item.path, str(exc)) from None
    return tuple(out)
