"""The next hop of a request: HTTP/1.1 (h11 client) or HTTP/2 (h2 client, multiplexed).

``forward(exchange, target, headers)`` sends the request head and the
exchange's body to the next hop and relays the response back through the
exchange. Errors of the next hop become ``UpstreamError`` (the handler
answers 502 when no response has started), never the client's fault.

The HTTP/2 client has no reader task of its own: whichever stream is
waiting reads the next chunk and dispatches it to every stream (one reader
at a time; the others wait for the "activity" event each read sets). A
pooled connection therefore costs no task while idle, and a slow stream
never delays another's response.
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h11

from proxy.errors import UpstreamError
from proxy.http.h1 import HOP_BY_HOP, Headers, forwardable
from proxy.runtime.http.exchange import Exchange
from proxy.runtime.http.streams import ByteStream
from proxy.runtime.primitives import Io


def response_headers(raw: Headers) -> Headers:
    """A response's end-to-end headers plus its Content-Length when it had exactly one."""
    lengths = [v for n, v in raw if n.lower() == b"content-length"]
    kept = forwardable(raw)
    return kept + [(b"content-length", lengths[0])] if len(lengths) == 1 else kept


class H1Upstream:
    """An HTTP/1.1 client connection (h11) over a byte stream, one request at a time."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.reusable = False
        self.used = 0

    async def forward(self, exchange: Exchange, target: str, headers: Headers) -> None:
        """Send the request, relay the response; ``reusable`` says if another may follow.

        Raises:
            UpstreamError: the next hop failed or answered something that is not HTTP.
        """
        self.reusable = False
        self.used += 1
        try:
            await self._send(h11.Request(method=exchange.method, target=target, headers=headers))
            if exchange.has_body:
                async for chunk in exchange.body():
                    await self._send(h11.Data(data=chunk))
            await self._send(h11.EndOfMessage())
            await self._relay_response(exchange)
        except (h11.ProtocolError, OSError) as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.reusable = True

    async def _relay_response(self, exchange: Exchange) -> None:
        while True:
            event = await self._next()
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue was ours to send; other 1xx are not relayed
            if isinstance(event, h11.Response):
                await exchange.respond(event.status_code, response_headers(
                    [(bytes(n), bytes(v)) for n, v in event.headers]))
            elif isinstance(event, h11.Data):
                await exchange.send(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                await exchange.end()
                return
            else:
                raise UpstreamError(f"the next hop closed before the response ended ({type(event).__name__})")

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def _next(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive())

    def close(self) -> None:
        self.stream.close()


class _ClientGone(Exception):
    """Writing to or reading from the client failed while relaying: the next hop is not to blame."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: What the client side raises when it goes away (socket errors, its own h2/h11 connection's errors).
_CLIENT_ERRORS = (OSError, h2.exceptions.ProtocolError, h11.ProtocolError)


async def _to_client(op: Awaitable[None]) -> None:
    try:
        await op
    except _CLIENT_ERRORS as exc:
        raise _ClientGone(exc) from exc


async def _from_client(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await body.__anext__()
        except StopAsyncIteration:
            return
        except _CLIENT_ERRORS as exc:
            raise _ClientGone(exc) from exc
        yield chunk


class _UpStream:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.chunks: list[tuple[bytes, int]] = []
        self.ended = False
        self.reset: int | None = None


class H2Upstream:
    """An HTTP/2 client connection (h2) over a byte stream, shared by many requests."""

    def __init__(self, io: Io, stream: ByteStream, scheme: str = "https") -> None:
        self.io = io
        self.stream = stream
        self.scheme = scheme.encode()
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True,
                                                                              header_encoding=None))
        self.streams: dict[int, _UpStream] = {}
        self.lock = io.new_lock()
        self.activity = io.new_event()
        self.reading = False
        self.dead = False
        self.used = 0

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self._call(lambda c: None)

    @property
    def capacity(self) -> int:
        """Streams that may still be opened now."""
        if self.dead:
            return 0
        return self.conn.remote_settings.max_concurrent_streams - self.conn.open_outbound_streams

    async def forward(self, exchange: Exchange, target: str, headers: Headers) -> None:
        """Send the request on a new stream, relay the response.

        Raises:
            UpstreamError: the connection or the stream failed before the response ended.
        """
        self.used += 1
        try:
            sid = await self._open(exchange, target, headers)
        except (h2.exceptions.ProtocolError, OSError) as exc:
            self.dead = True
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        try:
            if exchange.has_body:
                await self._send_body(sid, exchange)
            await self._relay_response(sid, exchange)
        except _ClientGone as gone:
            self._cancel(sid)  # the client went away: this stream only; the connection serves others
            raise gone.cause from None
        except (h2.exceptions.ProtocolError, OSError) as exc:
            self.dead = True
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._cancel(sid)  # cancelled, or the client's own error: nothing more is wanted on this stream
            raise
        finally:
            self.streams.pop(sid, None)

    def _cancel(self, sid: int) -> None:
        """RST_STREAM(CANCEL) without waiting: queued, sent with the next write on the connection."""
        if not self.dead:
            try:
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.ProtocolError:
                pass  # already closed both ways

    async def _send_body(self, sid: int, exchange: Exchange) -> None:
        try:
            async for chunk in _from_client(exchange.body()):
                await self._send_data(sid, memoryview(chunk))
            await self._call(lambda c: c.end_stream(sid))
        except h2.exceptions.StreamClosedError:
            pass  # the next hop answered early and reset the rest (e.g. a 403): the response tells

    async def _open(self, exchange: Exchange, target: str, headers: Headers) -> int:
        authority = exchange.authority or "localhost"
        fields = [(b":method", exchange.method.encode()), (b":scheme", self.scheme),
                  (b":authority", authority.encode("latin-1")), (b":path", target.encode("latin-1"))]
        fields += [(n, v) for n, v in headers if n not in HOP_BY_HOP and n != b"host"]
        if exchange.content_length is not None:
            fields.append((b"content-length", str(exchange.content_length).encode()))
        opened: list[int] = []

        def open_stream(c: h2.connection.H2Connection) -> None:
            # Under the write lock: two requests must never be given the same stream id.
            sid = c.get_next_available_stream_id()
            self.streams[sid] = _UpStream()
            opened.append(sid)
            c.send_headers(sid, fields, end_stream=not exchange.has_body)

        await self._call(open_stream)
        return opened[0]

    async def _relay_response(self, sid: int, exchange: Exchange) -> None:
        state = self.streams[sid]
        await self._pump_until(lambda: state.headers is not None or state.reset is not None or self.dead)
        if state.headers is None:
            raise UpstreamError(f"stream reset by the next hop (error {state.reset})" if state.reset is not None
                                else "the next hop closed the connection")
        status = int(dict(state.headers)[b":status"])
        await _to_client(exchange.respond(status, response_headers([(n, v) for n, v in state.headers
                                                                    if not n.startswith(b":")])))
        while True:
            await self._pump_until(lambda: bool(state.chunks) or state.ended or state.reset is not None
                                   or self.dead)
            while state.chunks:
                data, flow = state.chunks.pop(0)
                await _to_client(exchange.send(data))
                await self._call(lambda c: c.acknowledge_received_data(flow, sid))
            if state.ended:
                await _to_client(exchange.end())
                return
            if state.reset is not None or self.dead:
                raise UpstreamError("the response was cut short by the next hop")

    async def _send_data(self, sid: int, view: memoryview) -> None:
        while view:
            await self._pump_until(lambda: self.dead or self.conn.local_flow_control_window(sid) > 0)
            if self.dead:
                raise UpstreamError("the next hop closed the connection")
            n = min(len(view), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            chunk = bytes(view[:n])
            await self._call(lambda c: c.send_data(sid, chunk))
            view = view[n:]

    async def _pump_until(self, done: Callable[[], bool]) -> None:
        while not done():
            if self.reading:
                await self.activity.wait()
                continue
            self.reading = True
            try:
                data = await self.stream.receive()
                if not data:
                    self.dead = True
                else:
                    for event in self.conn.receive_data(data):
                        self._dispatch(event)
                    await self._call(lambda c: None)
            finally:
                self.reading = False
                woken, self.activity = self.activity, self.io.new_event()
                woken.set()

    def absorb(self, data: bytes) -> None:
        """Take bytes read while no stream was waiting (h2 answers PINGs and SETTINGS on the next write)."""
        try:
            for event in self.conn.receive_data(data):
                self._dispatch(event)
        except h2.exceptions.ProtocolError:
            self.dead = True

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            if (s := self.streams.get(event.stream_id)) is not None:
                s.headers = list(event.headers)
                s.ended = s.ended or event.stream_ended is not None
        elif isinstance(event, h2.events.DataReceived):
            s = self.streams.get(event.stream_id)
            if s is None:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                s.chunks.append((bytes(event.data), event.flow_controlled_length))
        elif isinstance(event, h2.events.StreamEnded):
            if (s := self.streams.get(event.stream_id)) is not None:
                s.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if (s := self.streams.get(event.stream_id)) is not None and not s.ended:
                s.reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.dead = True

    async def _call(self, fn: Callable[[h2.connection.H2Connection], object]) -> None:
        async with self.lock:
            fn(self.conn)
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    def close(self) -> None:
        self.dead = True
        self.stream.close()
