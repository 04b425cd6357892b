"""Which HTTP a connection speaks, decided before any request is parsed.

Between sidecars ALPN decides (``h2`` or ``http/1.1``, offered by our
outbound side, selected by an HTTP inbound listener). Without ALPN (the
app's plaintext, or a TLS client that offered none) the first bytes decide:
the HTTP/2 connection preface (h2c "prior knowledge", RFC 9113 section 3.3)
or an HTTP/1.x request line. Anything else is not HTTP: a ``protocol:
http`` listener closes it with ``not_http`` rather than relay it unparsed.
"""

from __future__ import annotations

import enum
import re

#: RFC 9113 section 3.4: every HTTP/2 connection starts with these 24 octets.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: ALPN protocol IDs we offer and accept, preferred first.
ALPN_H2 = "h2"
ALPN_H1 = "http/1.1"
ALPN_PROTOCOLS = (ALPN_H2, ALPN_H1)
#: A request line starts with a method token and a space; 16 bytes decide.
SNIFF_BYTES = 24
_METHOD_START = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20} ")
_TOKEN_CHARS = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")


class HttpVersion(enum.Enum):
    """What a connection speaks (also a log field)."""

    H1 = "HTTP/1.1"
    H2 = "HTTP/2"


class NotHttp(Exception):
    """The first bytes are not HTTP/1.x nor the HTTP/2 preface."""


def from_alpn(selected: str) -> HttpVersion | None:
    """The version ALPN chose, or None when none was negotiated (sniff then)."""
    if selected == ALPN_H2:
        return HttpVersion.H2
    if selected == ALPN_H1:
        return HttpVersion.H1
    return None


def sniff(first: bytes, *, eof: bool = False) -> HttpVersion | None:
    """Decide from the first bytes; None: need more (call again with more, or ``eof``).

    Raises:
        NotHttp: the bytes cannot start an HTTP/1.x request or the h2 preface.
    """
    if H2_PREFACE.startswith(first[:len(H2_PREFACE)]) and first:
        if len(first) >= len(H2_PREFACE):
            return HttpVersion.H2
        if not eof:
            return None
    if _METHOD_START.match(first):
        return HttpVersion.H1
    head = first[:21]
    if not eof and _TOKEN_CHARS.fullmatch(head) and len(head) <= 20:
        return None  # a method token still arriving
    raise NotHttp(f"first bytes {first[:16]!r} are neither an HTTP/1.x request nor the HTTP/2 preface")
