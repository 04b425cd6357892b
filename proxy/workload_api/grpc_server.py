"""The server side of gRPC over HTTP/2, sans-IO (bytes in, events out).

Why sans-IO: the agent must own its accepted Unix sockets (it reads each
caller's SO_PEERCRED before speaking HTTP/2), and tests can drive this
class with plain bytes. It wraps h2's H2Connection the way h2 wraps the
wire: `receive_data(bytes) -> [events]`, then `data_to_send()`.

Only what the Workload API needs: unary and server-streaming calls. Each
call is an HTTP/2 stream: request HEADERS (`:path` is the method),
length-prefixed request messages in DATA, the client's END_STREAM; then
response HEADERS, response messages, and trailers with grpc-status. An
error before any response message is sent as a trailers-only response
(one HEADERS frame with `:status` and grpc-status, END_STREAM).

Flow control: received DATA is acknowledged at once (messages are small
and consumed immediately). Outbound messages larger than the peer's
window are buffered per stream and resumed on WindowUpdated, so a slow
reader never makes us violate its window; `max_buffered` bounds that
buffer, and a stream exceeding it is reset (a reader that never reads
must not grow our memory without bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.errors
import h2.events
import h2.exceptions

from proxy.workload_api.grpc import (
    WINDOW_EVENTS,
    GrpcProtocolError,
    GrpcStatusError,
    H2Endpoint,
    MessageDecoder,
    StatusCode,
    encode_message,
    parse_timeout,
    status_headers,
)

#: Outbound bytes buffered per stream while the peer's window is closed.
MAX_BUFFERED_BYTES = 8 * 1024 * 1024


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A client opened a call.

    Attributes:
        stream_id: HTTP/2 stream of the call; pass it back to every send_*.
        method: the `:path`, e.g. "/SpiffeWorkloadAPI/FetchX509SVID".
        metadata: non-pseudo, non-reserved headers in arrival order
            (a key may repeat; the security-header rule needs every value).
        timeout: seconds from grpc-timeout, or None when the client set none.
    """

    stream_id: int
    method: str
    metadata: tuple[tuple[str, str], ...]
    timeout: float | None


@dataclass(frozen=True, slots=True)
class RequestMessage:
    """One complete request message (serialized protobuf) arrived."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestEnded:
    """The client half-closed: no more request messages on this call."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class CallCancelled:
    """The client reset the stream (cancelled the call); stop working on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The client sent GOAWAY; no new calls will come."""


Event = CallStarted | RequestMessage | RequestEnded | CallCancelled | ConnectionEnded

__all__ = ["CallCancelled", "CallStarted", "ConnectionEnded", "Event", "GrpcProtocolError",
           "GrpcServerConnection", "RequestEnded", "RequestMessage"]


@dataclass(slots=True)
class _Call:
    decoder: MessageDecoder = field(default_factory=MessageDecoder)
    headers_sent: bool = False
    closed: bool = False
    pending: bytearray = field(default_factory=bytearray)
    pending_end: list[tuple[tuple[str, str], ...]] = field(default_factory=list)


_RESERVED = frozenset({"te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                       "user-agent", "content-length"})


class GrpcServerConnection(H2Endpoint):
    """One HTTP/2 connection seen from the gRPC server side.

    Close it with ``close()`` (queues a GOAWAY), then send ``data_to_send()``.
    """

    def __init__(self, *, max_buffered: int = MAX_BUFFERED_BYTES) -> None:
        super().__init__(client_side=False)
        self._calls: dict[int, _Call] = {}
        self._max_buffered = max_buffered

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; return what they meant.

        Raises:
            GrpcProtocolError: the bytes are not valid HTTP/2 (a GOAWAY is
                queued in data_to_send()).
        """
        out: list[Event] = []
        for ev in self._receive_h2(data):
            out.extend(self._translate(ev))
        return out

    def _translate(self, ev: h2.events.Event) -> list[Event]:
        if isinstance(ev, h2.events.RequestReceived):
            # header_encoding='utf-8' makes h2 hand us str pairs.
            return self._on_request(ev.stream_id, [(str(k), str(v)) for k, v in ev.headers or []])
        if isinstance(ev, h2.events.DataReceived):
            return self._on_data(ev.stream_id, ev.data or b"", ev.flow_controlled_length or 0)
        if isinstance(ev, h2.events.StreamEnded):
            call = self._calls.get(ev.stream_id)
            return [RequestEnded(ev.stream_id)] if call is not None else []
        if isinstance(ev, h2.events.StreamReset):
            if self._calls.pop(ev.stream_id, None) is not None:
                return [CallCancelled(ev.stream_id)]
            return []
        if isinstance(ev, WINDOW_EVENTS):
            self._flush_pending()
            return []
        if isinstance(ev, h2.events.ConnectionTerminated):
            return [ConnectionEnded()]
        return []

    def _on_request(self, stream_id: int, raw: list[tuple[str, str]]) -> list[Event]:
        headers = [(str(k), str(v)) for k, v in raw]
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        ctype = next((v for k, v in headers if k == "content-type"), "")
        self._calls[stream_id] = _Call()
        if pseudo.get(":method") != "POST" or not ctype.startswith("application/grpc"):
            self._send_error(stream_id, StatusCode.INVALID_ARGUMENT, "not a gRPC request", http_status="415"
                             if pseudo.get(":method") == "POST" else "405")
            return []
        timeout: float | None = None
        raw_timeout = next((v for k, v in headers if k == "grpc-timeout"), None)
        if raw_timeout is not None:
            try:
                timeout = parse_timeout(raw_timeout)
            except GrpcStatusError as exc:
                self._send_error(stream_id, exc.status, exc.message)
                return []
        metadata = tuple((k, v) for k, v in headers if not k.startswith(":") and k not in _RESERVED)
        # h2 reports END_STREAM on the HEADERS as a separate StreamEnded event.
        return [CallStarted(stream_id, pseudo.get(":path", ""), metadata, timeout)]

    def _on_data(self, stream_id: int, data: bytes, flow_len: int) -> list[Event]:
        if flow_len:
            self._h2.acknowledge_received_data(flow_len, stream_id)
        call = self._calls.get(stream_id)
        if call is None or call.closed:
            return []
        try:
            return [RequestMessage(stream_id, m) for m in call.decoder.feed(data)]
        except GrpcStatusError as exc:
            self._send_error(stream_id, exc.status, exc.message)
            return [CallCancelled(stream_id)]

    # -- output --------------------------------------------------------------

    def send_message(self, stream_id: int, payload: bytes) -> bool:
        """Send one response message (response headers first if not yet sent).

        Returns False when the call is gone: already finished, reset by the client, or reset
        here because the reader let more than `max_buffered` bytes pile up. The caller must
        then stop producing messages for it (nobody will ever read them).
        """
        call = self._live(stream_id)
        if call is None:
            return False
        if not call.headers_sent:
            self._h2.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            call.headers_sent = True
        call.pending += encode_message(payload)
        if len(call.pending) > self._max_buffered:
            self.reset(stream_id)
            return False
        self._flush(stream_id, call)
        return self._calls.get(stream_id) is call

    def send_status(self, stream_id: int, status: StatusCode, message: str = "") -> bool:
        """End the call with trailers (or a trailers-only response if nothing was sent).

        Returns False when the call was already gone (nothing is sent then).
        """
        call = self._live(stream_id)
        if call is None:
            return False
        if not call.headers_sent:
            self._send_error(stream_id, status, message)
            return True
        call.pending_end.append(tuple(status_headers(status, message)))
        call.closed = True
        self._flush(stream_id, call)
        return True

    def reset(self, stream_id: int) -> None:
        """Abort a call with RST_STREAM(CANCEL) (e.g. its deadline passed)."""
        call = self._calls.pop(stream_id, None)
        if call is None:
            return
        try:
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass

    def open_calls(self) -> int:
        """Calls not yet finished (for tests and drain)."""
        return len(self._calls)

    # -- internals -------------------------------------------------------------

    def _live(self, stream_id: int) -> _Call | None:
        call = self._calls.get(stream_id)
        return None if call is None or call.closed else call

    def _send_error(self, stream_id: int, status: StatusCode, message: str, http_status: str = "200") -> None:
        headers = [(":status", http_status), ("content-type", "application/grpc"), *status_headers(status, message)]
        try:
            self._h2.send_headers(stream_id, headers, end_stream=True)
        except h2.exceptions.H2Error:
            pass
        self._calls.pop(stream_id, None)

    def _flush_pending(self) -> None:
        for stream_id, call in list(self._calls.items()):
            if call.pending or call.pending_end:
                self._flush(stream_id, call)

    def _flush(self, stream_id: int, call: _Call) -> None:
        """Send as much buffered data as the windows allow; trailers once drained."""
        try:
            if not self._send_windowed(stream_id, call.pending):
                return
            if call.pending_end:
                self._h2.send_headers(stream_id, list(call.pending_end.pop()), end_stream=True)
                self._calls.pop(stream_id, None)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The client went away (RST or connection closing): drop the call.
            self._calls.pop(stream_id, None)
