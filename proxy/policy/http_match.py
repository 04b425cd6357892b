"""The request conditions of a rule (``http: {methods, paths, headers}``), compiled.

A rule with ``http:`` matches a request when its peers match AND every
condition it lists matches (an omitted condition matches everything):

- ``methods``: a set of method tokens (``GET``, ``HEAD``...; case-sensitive,
  as HTTP says); the request's method is one of them.
- ``paths``: patterns over the *normalized* path (``proxy.http.normalize``),
  with the segment rules of SPIFFE ID patterns: a literal segment, ``*`` for
  exactly one segment, ``**`` (last only) for the rest; a pattern without
  wildcards is an exact path. One deliberate difference: ``/admin/**`` also
  covers ``/admin`` itself, because a rule on a subtree that misses the
  subtree's root is a bypass waiting to happen (``/admin/../admin``
  normalizes to ``/admin``). ``/**`` matches every path.
- ``headers``: each item names a header (case-insensitive) and one of
  ``exact: VALUE``, ``prefix: VALUE`` or ``present: true|false``. Several
  fields of one name are joined with ``,`` first (as Envoy does), so a
  second copy of a header cannot hide the first.

Patterns are refused when loaded if they can never match a normalized path
(``.``/``..`` segments, ``//``, a lowercase or unreserved percent-escape, an
escaped slash, a partial-segment glob): an impossible rule is an error,
never a silent no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, NamedTuple

ONE = "*"
REST = "**"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})*")
_UNRESERVED_ESCAPE = re.compile(r"%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)")


class HttpPatternError(ValueError):
    """An invalid request condition; the message names the value and the rule."""


class RequestView(NamedTuple):
    """One request, as the policy sees it (built once per request).

    Attributes:
        method: the method token as sent.
        path: the normalized path.
        segments: the path split once, shared by every path pattern.
        headers: lowercase name -> values joined with ``,``.
    """

    method: str
    path: str
    segments: tuple[str, ...]
    headers: Mapping[str, str]

    @classmethod
    def of(cls, method: str, path: str, headers: Mapping[str, str] | None = None) -> RequestView:
        """A view of a request whose ``path`` is already normalized."""
        return cls(method, path, tuple(path[1:].split("/")), headers or {})

    def describe(self) -> str:
        """``GET /path`` for explanations (never a metric label)."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A compiled path pattern: literal or ``*`` segments, then maybe ``**``."""

    text: str
    segments: tuple[str, ...]
    rest: bool

    def matches(self, segments: tuple[str, ...]) -> bool:
        """True when a normalized path's segments fit this pattern."""
        n = len(self.segments)
        if self.rest:
            if len(segments) < n:
                return False
        elif len(segments) != n:
            return False
        for want, got in zip(self.segments, segments):
            if want != ONE and want != got:
                return False
        return True


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """One header condition: ``exact``, ``prefix`` or ``present``."""

    name: str
    exact: str | None = None
    prefix: str | None = None
    present: bool | None = None

    def matches(self, headers: Mapping[str, str]) -> bool:
        value = headers.get(self.name)
        if self.present is not None:
            return (value is not None) == self.present
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        return self.prefix is not None and value.startswith(self.prefix)

    def describe(self) -> str:
        if self.present is not None:
            return f"{self.name} {'present' if self.present else 'absent'}"
        return f"{self.name} {'== ' + repr(self.exact) if self.exact is not None else 'starts with ' + repr(self.prefix)}"


@dataclass(frozen=True, slots=True)
class HttpMatch:
    """A rule's request conditions; None fields match everything.

    Attributes:
        methods: allowed method tokens, or None.
        exact_paths: pattern-free paths (one set lookup).
        path_globs: the wildcard patterns, file order.
        paths: every path pattern as written (None: no path condition).
        headers: every header condition (all must match).
    """

    methods: frozenset[str] | None
    exact_paths: frozenset[str]
    path_globs: tuple[PathPattern, ...]
    paths: tuple[str, ...] | None
    headers: tuple[HeaderMatcher, ...] = ()

    def matches(self, request: RequestView) -> bool:
        """True when the request meets every condition."""
        if self.methods is not None and request.method not in self.methods:
            return False
        if self.paths is not None and request.path not in self.exact_paths:
            if not any(p.matches(request.segments) for p in self.path_globs):
                return False
        return all(h.matches(request.headers) for h in self.headers)

    def describe(self) -> str:
        """The conditions as one readable phrase (explanations)."""
        parts = []
        if self.methods is not None:
            parts.append("methods " + ",".join(sorted(self.methods)))
        if self.paths is not None:
            parts.append("paths " + ",".join(self.paths))
        parts += [f"header {h.describe()}" for h in self.headers]
        return "; ".join(parts) or "any request"


def compile_method(text: str) -> str:
    """Validate a method token.

    Raises:
        HttpPatternError: not an HTTP token.
    """
    if not _TOKEN.fullmatch(text):
        raise HttpPatternError(f"invalid method {text!r}: a method is an HTTP token such as GET")
    return text


def compile_path_pattern(text: str) -> PathPattern | str:
    """Validate a path pattern: an exact path (returned as str) or a PathPattern.

    Raises:
        HttpPatternError: naming the pattern and the rule it breaks.
    """
    if not text.startswith("/"):
        raise HttpPatternError(f"invalid path pattern {text!r}: a path starts with '/'")
    segs = text[1:].split("/")
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        _check_segment(text, seg, last)
        if seg == REST and not last:
            raise HttpPatternError(f"invalid path pattern {text!r}: '**' is allowed only as the last segment")
    if ONE not in segs and REST not in segs:
        return text
    rest = segs[-1] == REST
    return PathPattern(text, tuple(segs[:-1] if rest else segs), rest)


def _check_segment(text: str, seg: str, last: bool) -> None:
    if seg in (ONE, REST):
        return
    if "*" in seg:
        raise HttpPatternError(f"invalid path pattern {text!r}: segment {seg!r} mixes '*' with other characters;"
                               " a segment is literal, '*' (one segment) or '**' (the rest)")
    if seg in (".", ".."):
        raise HttpPatternError(f"invalid path pattern {text!r}: '.' and '..' segments never reach the policy"
                               " (paths are normalized first)")
    if seg == "" and not last:
        raise HttpPatternError(f"invalid path pattern {text!r}: '//' never reaches the policy (slashes are merged)")
    if not _SEGMENT.fullmatch(seg):
        raise HttpPatternError(f"invalid path pattern {text!r}: segment {seg!r} has a character a normalized path"
                               " never has (escapes are uppercase %XX)")
    bad = _UNRESERVED_ESCAPE.search(seg)
    if bad or "%2F" in seg or "%5C" in seg:
        what = bad.group(0) if bad else "an escaped slash"
        raise HttpPatternError(f"invalid path pattern {text!r}: {what} never reaches the policy"
                               " (unreserved escapes are decoded, escaped slashes refused)")


def compile_header(name: str, *, exact: str | None, prefix: str | None, present: bool | None) -> HeaderMatcher:
    """Validate one header condition (exactly one of exact, prefix, present).

    Raises:
        HttpPatternError: bad name or not exactly one condition.
    """
    if not _TOKEN.fullmatch(name):
        raise HttpPatternError(f"invalid header name {name!r}: a header name is an HTTP token")
    given = [k for k, v in (("exact", exact), ("prefix", prefix), ("present", present)) if v is not None]
    if len(given) != 1:
        raise HttpPatternError(f"header {name!r} needs exactly one of exact, prefix or present"
                               f" (got {', '.join(given) or 'none'})")
    return HeaderMatcher(name.lower(), exact, prefix, present)


def compile_http_match(*, methods: list[str] | None, paths: list[str] | None,
                       headers: tuple[HeaderMatcher, ...] = ()) -> HttpMatch:
    """Compile validated conditions into an HttpMatch.

    Raises:
        HttpPatternError: an invalid method or path pattern.
    """
    exact: set[str] = set()
    globs: list[PathPattern] = []
    for text in paths or ():
        compiled = compile_path_pattern(text)
        if isinstance(compiled, PathPattern):
            globs.append(compiled)
        else:
            exact.add(compiled)
    return HttpMatch(methods=frozenset(compile_method(m) for m in methods) if methods is not None else None,
                     exact_paths=frozenset(exact), path_globs=tuple(globs),
                     paths=tuple(paths) if paths is not None else None, headers=headers)
