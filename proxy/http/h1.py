"""HTTP/1.1 framing rules the sidecar adds on top of h11 (sans-IO).

h11 parses and serializes; these are the checks h11 leaves to the user,
each a request-smuggling defense (RFC 9112 section 11.2) that refuses a
request rather than guess how the app would frame it:

- a head longer than the listener's ``max_head_bytes`` (431, even when it
  arrived in one piece, which h11's own limit lets through);
- ``Content-Length`` together with ``Transfer-Encoding`` (h11 lets
  Transfer-Encoding win; a different app might not);
- more than one ``Content-Length`` field, even with equal values;
- obs-fold (a header line continued on the next line; h11 unfolds it);
- a bare LF line ending (h11 accepts it; some servers do not).

And what a proxy must not forward (RFC 9110 section 7.6.1): hop-by-hop
headers, those named by ``Connection``, and the framing headers, which are
re-derived for the next hop.
"""

from __future__ import annotations

import re
from typing import Iterable

from proxy.errors import HttpRequestError, RequestRejection

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\n[ \t]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_CL = re.compile(rb"\ncontent-length[ \t]*:", re.IGNORECASE)
_TE = re.compile(rb"\ntransfer-encoding[ \t]*:", re.IGNORECASE)

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
                        b"content-length", b"expect", b"http2-settings"})

Headers = list[tuple[bytes, bytes]]


def head_end(buffer: bytes) -> int | None:
    """Offset just past the blank line ending the head at the start of ``buffer``, or None."""
    m = _HEAD_END.search(buffer)
    return m.end() if m is not None else None


def check_head(buffer: bytes, max_head: int) -> bool:
    """Check the request head at the start of ``buffer``; False: incomplete, read more.

    Raises:
        HttpRequestError: HEAD_TOO_LARGE or MALFORMED (see the module docstring).
    """
    # RFC 9112 section 2.2 lets a server skip empty lines before a request line; the checks must
    # not take such a line for the end of the head and wave the real head through unchecked.
    buffer = buffer.lstrip(b"\r\n")
    end = head_end(buffer)
    if end is None:
        if len(buffer) > max_head:
            raise HttpRequestError(RequestRejection.HEAD_TOO_LARGE, f"request head over {max_head} bytes")
        return False
    if end > max_head:
        raise HttpRequestError(RequestRejection.HEAD_TOO_LARGE, f"request head of {end} bytes (limit {max_head})")
    head = buffer[:end]
    if _BARE_LF.search(head):
        raise HttpRequestError(RequestRejection.MALFORMED, "a line of the head ends in a bare LF")
    if _FOLD.search(head[:-2]):
        raise HttpRequestError(RequestRejection.MALFORMED, "obs-fold (a header continued on the next line)")
    lengths = len(_CL.findall(head))
    if lengths > 1:
        raise HttpRequestError(RequestRejection.MALFORMED, f"{lengths} Content-Length fields")
    if lengths and _TE.search(head):
        raise HttpRequestError(RequestRejection.MALFORMED, "both Content-Length and Transfer-Encoding")
    return True


def forwardable(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset()) -> Headers:
    """The end-to-end headers of a message (lowercase names), without hop-by-hop ones and ``drop``."""
    items = [(bytes(n).lower(), bytes(v)) for n, v in headers]
    named = {t.strip().lower() for n, v in items if n == b"connection" for t in v.split(b",")}
    return [(n, v) for n, v in items if n not in HOP_BY_HOP and n not in named and n not in drop]


def values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every value of header ``name`` (lowercase), decoded as latin-1."""
    return [bytes(v).decode("latin-1") for n, v in headers if bytes(n).lower() == name]


def joined(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lowercase name -> values joined with ',' (what header rules match, as Envoy does)."""
    out: dict[str, str] = {}
    for n, v in headers:
        name = bytes(n).decode("latin-1").lower()
        value = bytes(v).decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out
