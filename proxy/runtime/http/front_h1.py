"""The HTTP/1.1 front: an h11 server over a byte stream, one exchange at a time.

Requests are read strictly one after another (pipelined bytes wait in
h11's buffer until the previous exchange is over), each head is checked by
``proxy.http.h1.check_head`` before h11 parses it, and every request is
re-serialized for the next hop: whatever framing tricks a client tries, the
next hop receives exactly the requests this front parsed, one at a time.

A malformed request is answered 400 (431 for an over-long head) and the
connection closes: after a framing error nothing later on the connection
can be trusted. A refused request (403) keeps the connection when its body
is absent or already read; otherwise the answer says ``Connection: close``.
"""

from __future__ import annotations

import time
from typing import AsyncIterator

import h11

from proxy.errors import HttpRequestError, RequestRejection
from proxy.http.detect import HttpVersion
from proxy.http.h1 import Headers, check_head, forwardable
from proxy.runtime.http.exchange import BODIES, REASONS, Handler, Outcome, Recorder, Verdict
from proxy.runtime.http.streams import ByteStream

#: A refused request's body is read (and dropped) up to this size to keep the connection; beyond, close.
DRAIN_LIMIT = 65536


class _Closing(Exception):
    """The connection must close after what was sent."""


class H1Exchange:
    """One request on an HTTP/1.1 connection (``proxy.runtime.http.exchange.Exchange``)."""

    version = HttpVersion.H1
    stream_id = None
    scheme = "http"

    def __init__(self, front: H1Front, request: h11.Request) -> None:
        self.front = front
        self.method = request.method.decode("ascii")
        self.target = request.target.decode("latin-1")
        raw = [(bytes(n), bytes(v)) for n, v in request.headers]
        host = [v for n, v in raw if n == b"host"]
        self.authority = host[0].decode("latin-1") if host else None
        lengths = [v for n, v in raw if n == b"content-length"]
        self.content_length = int(lengths[0]) if lengths else None
        self.has_body = self.content_length not in (None, 0) or any(n == b"transfer-encoding" for n, _ in raw)
        self.headers: Headers = forwardable(raw)
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._keep = True

    async def body(self) -> AsyncIterator[bytes]:
        conn = self.front.conn
        if conn.client_is_waiting_for_100_continue:
            await self.front.send(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            try:
                event = await self.front.next_event()
            except h11.RemoteProtocolError as exc:  # the client's framing, not the next hop's
                raise HttpRequestError(RequestRejection.MALFORMED, f"request body: {exc}") from None
            if isinstance(event, h11.Data):
                self.bytes_in += len(event.data)
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise HttpRequestError(RequestRejection.MALFORMED, f"unexpected {type(event).__name__} in a body")

    async def respond(self, status: int, headers: Headers) -> None:
        self.status = status
        extra = [] if self._keep else [(b"connection", b"close")]
        await self.front.send(h11.Response(status_code=status, headers=headers + extra,
                                           reason=REASONS.get(status, b"")))

    async def send(self, data: bytes) -> None:
        if data:
            self.bytes_out += len(data)
            await self.front.send(h11.Data(data=data))

    async def end(self) -> None:
        await self.front.send(h11.EndOfMessage())

    async def refuse(self, status: int) -> None:
        self._keep = await self._drain_small_body()
        body = BODIES.get(status, b"")
        await self.respond(status, [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())])
        await self.send(body)
        await self.end()

    async def _drain_small_body(self) -> bool:
        """Read and drop a small body so the connection stays usable; False when it must close."""
        conn = self.front.conn
        if conn.their_state is h11.DONE:
            return True
        if conn.client_is_waiting_for_100_continue or self.content_length is None \
                or self.content_length > DRAIN_LIMIT:
            return False
        async for _ in self.body():
            pass
        return True


class H1Front:
    """Serve HTTP/1.1 requests from ``stream`` to ``handler`` until the client is done."""

    def __init__(self, stream: ByteStream, handler: Handler, record: Recorder, *, max_head: int,
                 prefetched: bytes = b"") -> None:
        self.stream = stream
        self.handler = handler
        self.record = record
        self.max_head = max_head
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        if prefetched:
            self.conn.receive_data(prefetched)

    async def serve(self) -> None:
        """Until the client closes, a request asks to close, or one is malformed."""
        while True:
            try:
                request = await self._next_request()
            except (HttpRequestError, h11.RemoteProtocolError) as exc:
                await self._reject(exc)
                return
            if request is None:
                return
            try:
                await self._exchange(request)
            except _Closing:
                return
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    async def _next_request(self) -> h11.Request | None:
        while not check_head(self.conn.trailing_data[0], self.max_head):
            if not await self._receive():
                break
        event = await self.next_event()
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed: the client is done

    async def _exchange(self, request: h11.Request) -> None:
        started = time.monotonic()
        exchange = H1Exchange(self, request)
        try:
            verdict = await self.handler(exchange)
        except (HttpRequestError, h11.RemoteProtocolError) as exc:
            verdict = _rejected(exc)
            if exchange.status == 0 and self.conn.our_state is h11.SEND_RESPONSE:
                exchange._keep = False
                await exchange.refuse(_status_of(exc))
            self.record(exchange, verdict, time.monotonic() - started)
            raise _Closing() from None
        self.record(exchange, verdict, time.monotonic() - started)
        if not exchange._keep:
            raise _Closing()

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive():
                    continue  # h11 now knows about EOF: it answers ConnectionClosed or an error
                continue
            return event

    async def _receive(self) -> bool:
        data = await self.stream.receive()
        self.conn.receive_data(data)
        return bool(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def _reject(self, exc: Exception) -> None:
        """Answer a request that cannot be parsed, then close (raw bytes: h11 is in an error state)."""
        status = _status_of(exc)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = BODIES.get(status, b"")
            head = (f"HTTP/1.1 {status} ".encode() + REASONS.get(status, b"") + b"\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode())
            try:
                await self.stream.send_all(head + body)
            except OSError:
                pass
        self.record(_Unparsed(status), _rejected(exc), 0.0)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, HttpRequestError):
        return 431 if exc.rejection is RequestRejection.HEAD_TOO_LARGE else 400
    hint = getattr(exc, "error_status_hint", 400)
    return hint if hint in (400, 431) else 400


def _rejected(exc: Exception) -> Verdict:
    reason = exc.rejection.value if isinstance(exc, HttpRequestError) else RequestRejection.MALFORMED.value
    return Verdict(outcome=Outcome.REJECT, reason=reason)


class _Unparsed:
    """What the access log knows of a request that could not be parsed."""

    method = "-"
    target = "-"
    authority = None
    scheme = "http"
    headers: Headers = []
    content_length = None
    has_body = False
    version = HttpVersion.H1
    stream_id = None
    bytes_in = 0
    bytes_out = 0

    def __init__(self, status: int) -> None:
        self.status = status
