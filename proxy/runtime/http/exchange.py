"""One request/response exchange, the same shape whichever HTTP version carried it.

A *front* (``front_h1``: h11 server; ``front_h2``: h2 server) turns what a
client sent into ``Exchange`` objects and hands each to a *handler* (the
inbound handler decides and forwards to the app; the outbound handler
forwards through the pool). The handler reads the request body from the
exchange and writes the response back through it; the front does the
framing, flow control and connection reuse. So the policy, XFCC and the
pool are written once for HTTP/1.1 and HTTP/2.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Protocol

from proxy.http.detect import HttpVersion
from proxy.http.h1 import Headers

#: Short bodies naming nothing secret (the rule and the reason go to the access log).
BODIES = {400: b"bad request\n", 403: b"forbidden\n", 431: b"request header fields too large\n",
          502: b"bad gateway\n", 503: b"service unavailable\n"}
REASONS = {400: b"Bad Request", 403: b"Forbidden", 431: b"Request Header Fields Too Large",
           502: b"Bad Gateway", 503: b"Service Unavailable"}


class Outcome(enum.Enum):
    """What a handler did with a request (the access log's ``decision``)."""

    ALLOW = "allow"
    DENY = "deny"
    REJECT = "reject"


@dataclass(slots=True)
class Verdict:
    """What the handler reports for the access log."""

    outcome: Outcome = Outcome.ALLOW
    rule: str | None = None
    reason: str | None = None
    path: str | None = None
    upstream: str | None = None


class Summary(Protocol):
    """What the access log needs of an exchange (also of a request that could not be parsed)."""

    @property
    def method(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def version(self) -> HttpVersion: ...

    @property
    def stream_id(self) -> int | None: ...

    @property
    def status(self) -> int: ...

    @property
    def bytes_in(self) -> int: ...

    @property
    def bytes_out(self) -> int: ...


class Exchange(Summary, Protocol):
    """A request being served, and the way back to its client."""

    @property
    def authority(self) -> str | None: ...

    @property
    def scheme(self) -> str: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def has_body(self) -> bool: ...

    def body(self) -> AsyncIterator[bytes]:
        """The request body, chunk by chunk (empty when there is none)."""
        ...

    async def respond(self, status: int, headers: Headers) -> None:
        """Send the response head (hop-by-hop headers already removed; framing is the front's)."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def end(self) -> None: ...

    async def refuse(self, status: int) -> None:
        """Answer ``status`` with a short body, not reading the body further."""
        ...


Handler = Callable[[Exchange], Awaitable[Verdict]]

#: Called by a front when an exchange is over: (exchange, verdict, seconds it took).
Recorder = Callable[[Summary, Verdict, float], None]


def framing(headers: Headers, content_length: int | None, has_body: bool) -> Headers:
    """The framing header to forward: the validated Content-Length, else chunked when a body follows."""
    if content_length is not None:
        return [*headers, (b"content-length", str(content_length).encode())]
    if has_body:
        return [*headers, (b"transfer-encoding", b"chunked")]
    return headers
