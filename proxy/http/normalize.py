"""Request-path normalization before policy matching, the way Envoy does it.

A path policy is only as good as the path it sees: ``/admin/**`` must not be
bypassed with ``/./admin``, ``/%61dmin``, ``//admin`` or ``/x/../admin``.
Envoy's ``normalize_path`` (RFC 3986 section 6), ``merge_slashes`` and
``path_with_escaped_slashes_action: REJECT_REQUEST`` together give the rule
implemented here, applied to the path only (the query is kept verbatim):

1. the target is origin-form (starts with ``/``), ASCII printable, without a
   fragment, a NUL, a backslash or any control or space character;
2. every ``%XX`` must be a valid escape; an escaped unreserved character
   (``A-Z a-z 0-9 - . _ ~``) is decoded, every other escape keeps its
   meaning and gets uppercase hex (``%2f`` -> ``%2F`` is still refused next);
3. an escaped slash or backslash (``%2F``, ``%5C``) is refused: the app and
   the policy could otherwise split segments differently;
4. runs of ``/`` are merged; ``.`` and ``..`` segments are resolved (``..``
   above the root stays at the root, as RFC 3986 section 5.2.4 says).

The app receives the normalized path: it then serves exactly what the policy
decided on. A path that cannot be normalized is an ``HttpRequestError``
(``bad_path``, answered with 400), never forwarded.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from proxy.errors import HttpRequestError, RequestRejection

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
#: Characters allowed raw in a path or query (RFC 3986 pchar plus '/' and '?', plus '%' for escapes).
_ALLOWED = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
#: Decoded escapes that are refused: they would change where segments split.
_SLASH_ESCAPES = frozenset(("%2F", "%5C"))


class NormalizedPath(NamedTuple):
    """A normalized request target: the path matched by the policy, and the raw query.

    Attributes:
        path: normalized path, always starting with ``/``.
        query: everything after the first ``?`` (without it), or None.
    """

    path: str
    query: str | None

    @property
    def target(self) -> str:
        """The request target to forward."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments (``/`` is one empty segment; a trailing ``/`` adds an empty one)."""
        return tuple(self.path[1:].split("/"))


def _bad(detail: str) -> HttpRequestError:
    return HttpRequestError(RequestRejection.BAD_PATH, detail)


def normalize_target(target: str) -> NormalizedPath:
    """Normalize an origin-form request target (see the module docstring).

    Raises:
        HttpRequestError: (``bad_path``) the target cannot be normalized safely.
    """
    if not target.startswith("/"):
        raise _bad(f"request target {target[:64]!r} is not origin-form (must start with '/')")
    if not _ALLOWED.fullmatch(target):
        raise _bad(f"request target {target[:64]!r} has a character that is not allowed in a path")
    path, sep, query = target.partition("?")
    return NormalizedPath(_resolve(_merge(_decode(path))), query if sep else None)


def _decode(path: str) -> str:
    """Decode escaped unreserved characters, uppercase the rest; refuse bad or slash escapes."""
    if "%" not in path:
        return path
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        hexpart = path[i + 1:i + 3]
        if len(hexpart) != 2 or not set(hexpart) <= _HEX:
            raise _bad(f"path {path[:64]!r} has an invalid percent-escape at offset {i}")
        decoded = chr(int(hexpart, 16))
        escape = "%" + hexpart.upper()
        if escape in _SLASH_ESCAPES:
            raise _bad(f"path {path[:64]!r} has an escaped slash or backslash ({escape})")
        if escape == "%00":
            raise _bad(f"path {path[:64]!r} has an escaped NUL")
        out.append(decoded if decoded in _UNRESERVED else escape)
        i += 3
    return "".join(out)


def _merge(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


def _resolve(path: str) -> str:
    """RFC 3986 remove_dot_segments for an absolute path (``..`` never climbs above ``/``)."""
    segments = path[1:].split("/")
    out: list[str] = []
    for seg in segments:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    # A path ending in '.' or '..' names a directory: keep the trailing slash.
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)
