"""The client side of gRPC over HTTP/2, sans-IO (bytes in, events out).

``GrpcClientConnection`` wraps one ``h2`` client connection. The caller
owns the socket: it feeds received bytes to ``receive_data`` and writes
whatever ``data_to_send`` returns, exactly like h2 itself. Several calls
may run on one connection, each on its own stream.

A call is started with ``start_call``: request headers (method path,
``te: trailers``, ``content-type: application/grpc``, the Workload API's
``workload.spiffe.io: true`` metadata, an optional ``grpc-timeout``), then
one length-prefixed request message, then END_STREAM: unary and
server-streaming calls, which is all the Workload API has. Responses come
back as events: ``ResponseStarted`` (headers), ``MessageReceived`` (one
decoded message), ``CallEnded`` (status from the trailers; a
"trailers-only" response, where the headers carry grpc-status, ends the
call at once) and ``ConnectionEnded`` (GOAWAY).

Flow control: every DATA frame is acknowledged as soon as its messages are
decoded, because each message is handed to the caller whole; the caller's
backpressure is therefore at most one message per stream. A request larger
than the server's window is sent as the window opens (``H2Endpoint``'s
windowed send, shared with the server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import h2.errors
import h2.events
import h2.exceptions

from proxy.workload_api.grpc import (
    SECURITY_HEADER,
    WINDOW_EVENTS,
    GrpcProtocolError,
    GrpcStatusError,
    H2Endpoint,
    MessageDecoder,
    StatusCode,
    encode_message,
    format_timeout,
    status_from_trailers,
)

#: gRPC's mapping of non-200 HTTP statuses to status codes (doc/http-grpc-status-mapping.md).
_HTTP_TO_GRPC = {400: StatusCode.INTERNAL, 401: StatusCode.UNAUTHENTICATED, 403: StatusCode.PERMISSION_DENIED,
                 404: StatusCode.UNIMPLEMENTED, 429: StatusCode.UNAVAILABLE, 502: StatusCode.UNAVAILABLE,
                 503: StatusCode.UNAVAILABLE, 504: StatusCode.UNAVAILABLE}


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """The server accepted the call and sent its response headers."""

    stream_id: int
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One whole response message (serialized protobuf) arrived."""

    stream_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over.

    Attributes:
        status: the grpc-status (OK on success).
        message: the decoded grpc-message.
        trailers: the trailers (or trailers-only headers) as received.
    """

    stream_id: int
    status: StatusCode
    message: str = ""
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> GrpcStatusError | None:
        """The status as an exception, or None when it is OK."""
        if self.status == StatusCode.OK:
            return None
        return GrpcStatusError(self.status, self.message)


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The server sent GOAWAY; calls above last_stream_id never ran."""

    error_code: int
    last_stream_id: int
    detail: str = ""


CallEvent = ResponseStarted | MessageReceived | CallEnded | ConnectionEnded


@dataclass(slots=True)
class _Call:
    decoder: MessageDecoder = field(default_factory=MessageDecoder)
    headers: dict[str, str] | None = None
    trailers: dict[str, str] | None = None
    outgoing: bytearray = field(default_factory=bytearray)
    ended: bool = False


def _as_dict(headers: Iterable[tuple[bytes | str, bytes | str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


class GrpcClientConnection(H2Endpoint):
    """One HTTP/2 connection carrying gRPC calls (client side, no I/O).

    Close it with ``close()`` (queues a GOAWAY), then send ``data_to_send()``.

    Args:
        authority: the ``:authority`` pseudo-header; a Unix socket has no
            host, and SPIRE and grpcio both accept "localhost".
    """

    def __init__(self, authority: str = "localhost") -> None:
        super().__init__(client_side=True)
        self._authority = authority
        self._calls: dict[int, _Call] = {}

    def start_call(self, method: str, request: bytes, *, timeout: float | None = None,
                   metadata: Sequence[tuple[str, str]] = (SECURITY_HEADER,)) -> int:
        """Start a call and send its one request message; return the stream id.

        Args:
            method: the full method path, e.g. "/SpiffeWorkloadAPI/FetchX509SVID".
            request: the serialized request message.
            timeout: seconds, sent as grpc-timeout (the server enforces it too).
            metadata: extra headers; by default the Workload API's security header.

        Raises:
            GrpcStatusError: UNAVAILABLE when the connection can take no new stream.
        """
        stream_id = self._h2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", method),
                   (":authority", self._authority), ("te", "trailers"),
                   ("content-type", "application/grpc"), ("user-agent", "spiffe-sidecar")]
        if timeout is not None:
            headers.append(("grpc-timeout", format_timeout(timeout)))
        headers.extend(metadata)
        try:
            self._h2.send_headers(stream_id, headers)
        except h2.exceptions.ProtocolError as exc:
            raise GrpcStatusError(StatusCode.UNAVAILABLE, f"cannot start a call: {exc}") from exc
        call = _Call(outgoing=bytearray(encode_message(request)))
        self._calls[stream_id] = call
        self._flush_outgoing(stream_id, call)
        return stream_id

    def cancel_call(self, stream_id: int) -> None:
        """Abandon a call (RST_STREAM CANCEL); later frames for it are ignored."""
        call = self._calls.pop(stream_id, None)
        if call is not None and not call.ended:
            try:
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.ProtocolError:
                pass

    def receive_data(self, data: bytes) -> list[CallEvent]:
        """Feed bytes read from the socket; return the resulting call events.

        Raises:
            GrpcStatusError: INTERNAL when the server breaks HTTP/2 (callers retry on
                GrpcStatusError, so no other exception may escape).
        """
        try:
            h2_events = self._receive_h2(data)
        except GrpcProtocolError as exc:
            raise GrpcStatusError(StatusCode.INTERNAL, f"HTTP/2 protocol error from server: {exc}") from exc
        out: list[CallEvent] = []
        for event in h2_events:
            out.extend(self._handle(event))
        return out

    def connection_lost(self) -> list[CallEvent]:
        """The socket closed: end every open call with UNAVAILABLE."""
        out: list[CallEvent] = []
        for stream_id, call in list(self._calls.items()):
            if not call.ended:
                call.ended = True
                out.append(CallEnded(stream_id, StatusCode.UNAVAILABLE, "connection closed by the server"))
        self._calls.clear()
        return out

    # -- event handling ------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> list[CallEvent]:
        if isinstance(event, h2.events.ConnectionTerminated):
            detail = (event.additional_data or b"").decode("utf-8", "replace")
            return [ConnectionEnded(int(event.error_code or 0), event.last_stream_id or 0, detail),
                    *self._end_unstarted(event.last_stream_id or 0)]
        if isinstance(event, WINDOW_EVENTS):
            self._flush_all()
            return []
        stream_id = getattr(event, "stream_id", None)
        call = self._calls.get(stream_id) if stream_id else None
        if call is None or call.ended:
            if isinstance(event, h2.events.DataReceived) and stream_id:
                self._ack(event)
            return []
        assert stream_id is not None
        return self._handle_call_event(stream_id, call, event)

    def _handle_call_event(self, stream_id: int, call: _Call, event: h2.events.Event) -> list[CallEvent]:
        if isinstance(event, h2.events.ResponseReceived):
            call.headers = _as_dict(event.headers)
            if "grpc-status" in call.headers:
                call.trailers = call.headers  # trailers-only response
            return [ResponseStarted(stream_id, call.headers)]
        if isinstance(event, h2.events.DataReceived):
            self._ack(event)
            try:
                return [MessageReceived(stream_id, m) for m in call.decoder.feed(event.data or b"")]
            except GrpcStatusError as exc:
                self.cancel_call(stream_id)
                return [CallEnded(stream_id, exc.status, exc.message)]
        if isinstance(event, h2.events.TrailersReceived):
            call.trailers = _as_dict(event.headers)
            return []
        if isinstance(event, h2.events.StreamEnded):
            return [self._finish(stream_id, call)]
        if isinstance(event, h2.events.StreamReset):
            call.ended = True
            self._calls.pop(stream_id, None)
            code = StatusCode.CANCELLED if event.error_code == h2.errors.ErrorCodes.CANCEL else StatusCode.UNAVAILABLE
            return [CallEnded(stream_id, code, f"stream reset by server ({event.error_code!r})")]
        return []

    def _finish(self, stream_id: int, call: _Call) -> CallEnded:
        call.ended = True
        self._calls.pop(stream_id, None)
        headers = call.headers or {}
        http_status = int(headers.get(":status", "200") or 0)
        if http_status != 200 and call.trailers is None:
            code = _HTTP_TO_GRPC.get(http_status, StatusCode.UNKNOWN)
            return CallEnded(stream_id, code, f"HTTP status {http_status} from server")
        trailers = call.trailers or {}
        status, message = status_from_trailers(trailers)
        if status == StatusCode.OK and call.decoder.pending:
            status, message = StatusCode.INTERNAL, "response ended inside a message"
        return CallEnded(stream_id, status, message, trailers)

    def _end_unstarted(self, last_stream_id: int) -> list[CallEvent]:
        out: list[CallEvent] = []
        for stream_id, call in list(self._calls.items()):
            if stream_id > last_stream_id and not call.ended:
                call.ended = True
                del self._calls[stream_id]
                out.append(CallEnded(stream_id, StatusCode.UNAVAILABLE, "server is going away (GOAWAY)"))
        return out

    def _ack(self, event: h2.events.DataReceived) -> None:
        if event.flow_controlled_length and event.stream_id:
            try:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass

    def _flush_all(self) -> None:
        for stream_id, call in self._calls.items():
            if call.outgoing:
                self._flush_outgoing(stream_id, call)

    def _flush_outgoing(self, stream_id: int, call: _Call) -> None:
        # Requests are tiny, but a long JWT to validate may exceed a small peer window.
        self._send_windowed(stream_id, call.outgoing, end_stream=True)
