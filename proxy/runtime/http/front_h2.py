"""The HTTP/2 front: an h2 server over a byte stream, one task per stream.

One reader task feeds h2 and dispatches its events; each request stream is
served by its own task, so a slow or refused stream never holds up the
others (a 403 is that stream's answer alone; the connection and its other
streams go on). Writes go through one lock that takes h2's pending bytes
and sends them in order. Flow control both ways: a request body is
acknowledged as the handler consumes it (a client cannot make us buffer
more than its window), and a response waits for window updates.

h2 validates what it can (pseudo-headers, connection-specific headers,
CR/LF/NUL in fields); a violation is a protocol error that ends the
connection with GOAWAY, as RFC 9113 says.
"""

from __future__ import annotations

import time
from typing import AsyncIterator, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from proxy.errors import HttpRequestError, RequestRejection
from proxy.http.detect import HttpVersion
from proxy.http.h1 import HOP_BY_HOP, Headers
from proxy.runtime.http.exchange import BODIES, Handler, Outcome, Recorder, Verdict
from proxy.runtime.http.streams import ByteStream
from proxy.runtime.primitives import Io, TaskGroup


#: Connection-specific fields RFC 9113 section 8.2.2 forbids (Content-Length stays: it is end-to-end in h2).
_NOT_IN_H2 = HOP_BY_HOP - {b"content-length"}


class _StreamState:
    def __init__(self, io: Io) -> None:
        self.io = io
        self.chunks: list[bytes] = []
        self.ended = False
        self.reset = False
        self.wake = io.new_event()

    def notify(self) -> None:
        self.wake.set()
        self.wake = self.io.new_event()


class H2Exchange:
    """One request stream (``proxy.runtime.http.exchange.Exchange``)."""

    version = HttpVersion.H2

    def __init__(self, front: H2Front, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.front = front
        self.stream_id: int | None = stream_id
        self.sid = stream_id
        pseudo = {n: v for n, v in headers if n.startswith(b":")}
        self.method = pseudo.get(b":method", b"").decode("ascii")
        self.target = pseudo.get(b":path", b"").decode("latin-1")
        self.scheme = pseudo.get(b":scheme", b"https").decode("ascii")
        authority = pseudo.get(b":authority")
        self.authority = authority.decode("latin-1") if authority is not None else None
        regular = [(n, v) for n, v in headers if not n.startswith(b":")]
        lengths = [v for n, v in regular if n == b"content-length"]
        self.content_length = int(lengths[0]) if len(lengths) == 1 and lengths[0].isdigit() else None
        self.has_body = not ended
        self.headers: Headers = _join_cookies([(n, v) for n, v in regular if n not in HOP_BY_HOP])
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0

    async def body(self) -> AsyncIterator[bytes]:
        state = self.front.streams[self.sid]
        while True:
            if state.chunks:
                chunk = state.chunks.pop(0)
                self.bytes_in += len(chunk)
                await self.front.acknowledge(self.sid, len(chunk))
                yield chunk
                continue
            if state.reset:
                raise _StreamGone()
            if state.ended:
                return
            await state.wake.wait()

    async def respond(self, status: int, headers: Headers) -> None:
        self.status = status
        fields = [(b":status", str(status).encode())] + [(n, v) for n, v in headers if n not in _NOT_IN_H2]
        await self.front.call(lambda c: c.send_headers(self.sid, fields))

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = await self.front.send_data(self.sid, view)
            self.bytes_out += sent
            view = view[sent:]

    async def end(self) -> None:
        await self.front.call(lambda c: c.end_stream(self.sid))

    async def refuse(self, status: int) -> None:
        body = BODIES.get(status, b"")
        await self.respond(status, [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())])
        await self.send(body)
        await self.end()
        state = self.front.streams.get(self.sid)
        if state is not None and not state.ended:
            # The rest of the request body is not wanted: NO_ERROR ends the client's half cleanly.
            await self.front.call(lambda c: c.reset_stream(self.sid, h2.errors.ErrorCodes.NO_ERROR))


def _join_cookies(headers: Headers) -> Headers:
    """RFC 9113 section 8.2.3: cookie crumbs become one field again for an HTTP/1.1 hop."""
    cookies = [v for n, v in headers if n == b"cookie"]
    if len(cookies) < 2:
        return headers
    return [(n, v) for n, v in headers if n != b"cookie"] + [(b"cookie", b"; ".join(cookies))]


class H2Front:
    """Serve HTTP/2 streams from ``stream`` to ``handler`` until the connection ends."""

    def __init__(self, io: Io, stream: ByteStream, handler: Handler, record: Recorder, *,
                 max_head: int, prefetched: bytes = b"") -> None:
        self.io = io
        self.stream = stream
        self.handler = handler
        self.record = record
        self.max_head = max_head
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_head,
                                          h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 256})
        self.prefetched = prefetched
        self.streams: dict[int, _StreamState] = {}
        self.lock = io.new_lock()
        self.window = io.new_event()
        self.group: TaskGroup | None = None

    async def serve(self) -> None:
        self.conn.initiate_connection()
        await self.flush()
        async with self.io.open_group() as group:
            self.group = group
            await self._read(self.prefetched)
            group.cancel()

    async def _read(self, data: bytes) -> None:
        while True:
            if data:
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    await self.flush()  # h2 queued a GOAWAY
                    return
                for event in events:
                    if self._dispatch(event):
                        await self.flush()
                        return
                await self.flush()
            data = await self.stream.receive()
            if not data:
                return

    def _dispatch(self, event: h2.events.Event) -> bool:
        """Handle one h2 event; True when the connection is over."""
        if isinstance(event, h2.events.RequestReceived):
            ended = event.stream_ended is not None
            state = self.streams[event.stream_id] = _StreamState(self.io)
            state.ended = ended
            assert self.group is not None
            self.group.start_soon(self._serve_stream, event.stream_id, list(event.headers), ended)
        elif isinstance(event, h2.events.DataReceived):
            receiving = self.streams.get(event.stream_id)
            if receiving is None:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                receiving.chunks.append(bytes(event.data))
                padding = event.flow_controlled_length - len(event.data)
                if padding:
                    self.conn.acknowledge_received_data(padding, event.stream_id)
                receiving.notify()
        elif isinstance(event, h2.events.StreamEnded):
            if (finished := self.streams.get(event.stream_id)) is not None:
                finished.ended = True
                finished.notify()
        elif isinstance(event, h2.events.StreamReset):
            if (reset := self.streams.get(event.stream_id)) is not None:
                reset.reset = True
                reset.notify()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window.set()
            self.window = self.io.new_event()
        elif isinstance(event, h2.events.ConnectionTerminated):
            return True
        return False

    async def _serve_stream(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        started = time.monotonic()
        exchange = H2Exchange(self, sid, headers, ended)
        try:
            # RFC 9113 section 6.5.2's accounting (32 bytes per field); h2 advertises, we enforce.
            if sum(len(n) + len(v) + 32 for n, v in headers) > self.max_head:
                await exchange.refuse(431)
                verdict = Verdict(outcome=Outcome.REJECT, reason=RequestRejection.HEAD_TOO_LARGE.value)
            else:
                verdict = await self.handler(exchange)
        except HttpRequestError as exc:
            verdict = Verdict(outcome=Outcome.REJECT, reason=exc.rejection.value)
            await self._reset(sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, _StreamGone):
            verdict = Verdict(outcome=Outcome.REJECT, reason="stream_reset")
        finally:
            self.streams.pop(sid, None)
        self.record(exchange, verdict, time.monotonic() - started)

    async def _reset(self, sid: int) -> None:
        try:
            await self.call(lambda c: c.reset_stream(sid, h2.errors.ErrorCodes.PROTOCOL_ERROR))
        except h2.exceptions.StreamClosedError:
            pass

    # --- writing ---------------------------------------------------------------

    async def call(self, fn: Callable[[h2.connection.H2Connection], object]) -> None:
        """Apply one h2 operation and send what it produced, in order with every other writer."""
        async with self.lock:
            fn(self.conn)
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def flush(self) -> None:
        await self.call(lambda c: None)

    async def acknowledge(self, sid: int, n: int) -> None:
        try:
            await self.call(lambda c: c.acknowledge_received_data(n, sid))
        except h2.exceptions.StreamClosedError:
            pass

    async def send_data(self, sid: int, view: memoryview) -> int:
        """Send as much of ``view`` as the windows allow (waiting for one to open); returns bytes sent."""
        while True:
            state = self.streams.get(sid)
            if state is not None and state.reset:
                raise _StreamGone()
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window > 0:
                n = min(window, len(view))
                await self.call(lambda c: c.send_data(sid, bytes(view[:n])))
                return n
            await self.window.wait()


class _StreamGone(Exception):
    """The client reset the stream while we were answering it."""
