"""What both ends of gRPC-over-HTTP/2 share: status codes, framing, headers, h2 plumbing.

Why not grpcio: the agent must read each caller's kernel credentials
(SO_PEERCRED) from the accepted Unix socket, and grpcio hides the socket
(grpc/grpc#15511, #28755). The Workload API needs only unary and
server-streaming calls, so a small layer on h2 is enough. This module holds
the parts shared by the server (grpc_server.py) and the client
(grpc_client.py); neither does I/O. ``H2Endpoint`` is the h2 plumbing both
wrap: one place maps h2's errors, and one place sends DATA within the
peer's flow-control windows, so the two sides cannot drift apart (they did:
the client once ignored a SETTINGS-only window increase and could stall).

Wire format (gRPC over HTTP/2 spec): each message is a 5-byte prefix
(1-byte compressed flag, 4-byte big-endian length) followed by the
protobuf bytes; the call ends with trailers carrying grpc-status and a
percent-encoded grpc-message.
"""

from __future__ import annotations

import enum
import struct
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hyperframe.exceptions

from proxy.errors import WorkloadApiError

#: Metadata every Workload API request must carry (SPIFFE Workload Endpoint spec).
SECURITY_HEADER = ("workload.spiffe.io", "true")

#: Largest message either side accepts; SVID responses are a few KiB.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

_PREFIX = struct.Struct(">BI")


class StatusCode(enum.IntEnum):
    """gRPC status codes (grpc/doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GrpcStatusError(WorkloadApiError):
    """A call ended with a non-OK grpc-status.

    Attributes:
        status: the StatusCode.
        message: the decoded grpc-message.
    """

    def __init__(self, status: StatusCode, message: str = "") -> None:
        self.status = status
        super().__init__(status.name, message)


def encode_message(payload: bytes) -> bytes:
    """Frame one serialized protobuf message (uncompressed)."""
    return _PREFIX.pack(0, len(payload)) + payload


class MessageDecoder:
    """Incremental decoder of length-prefixed messages from DATA frames.

    Feed it whatever bytes arrive; it yields complete messages. A
    compressed flag (we never negotiate compression) or an oversized
    length is a protocol error, raised as GrpcStatusError so the caller can
    answer with the right status.
    """

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every message now complete, in order."""
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= _PREFIX.size:
            flag, length = _PREFIX.unpack_from(self._buf)
            if flag != 0:
                raise GrpcStatusError(StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
            if length > self._max:
                raise GrpcStatusError(StatusCode.RESOURCE_EXHAUSTED, f"message of {length} bytes exceeds {self._max}")
            end = _PREFIX.size + length
            if len(self._buf) < end:
                break
            out.append(bytes(self._buf[_PREFIX.size:end]))
            del self._buf[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole message."""
        return len(self._buf)


def encode_grpc_message(text: str) -> str:
    """Percent-encode a grpc-message value as the spec requires."""
    return urllib.parse.quote(text, safe=" !\"#$&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~")


def decode_grpc_message(text: str) -> str:
    """Decode a percent-encoded grpc-message value."""
    return urllib.parse.unquote(text)


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float:
    """Parse a grpc-timeout header ("100m", "5S") into seconds.

    Raises:
        GrpcStatusError: INVALID_ARGUMENT when the value is malformed.
    """
    # isdigit() alone accepts non-ASCII digits ("²") that int() then rejects with ValueError.
    if (len(value) < 2 or value[-1] not in _TIMEOUT_UNITS or not value[:-1].isascii()
            or not value[:-1].isdigit() or len(value) > 9):
        raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, f"bad grpc-timeout {value!r}")
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


def format_timeout(seconds: float) -> str:
    """Format seconds as a grpc-timeout header value (millisecond precision)."""
    return f"{max(1, int(seconds * 1000))}m"


def status_from_trailers(headers: dict[str, str]) -> tuple[StatusCode, str]:
    """Read grpc-status/grpc-message from trailers (or a trailers-only response)."""
    raw = headers.get("grpc-status")
    if raw is None:
        return StatusCode.UNKNOWN, "response ended without grpc-status"
    try:
        code = StatusCode(int(raw))
    except ValueError:
        code = StatusCode.UNKNOWN
    return code, decode_grpc_message(headers.get("grpc-message", ""))


def status_headers(status: StatusCode, message: str = "") -> list[tuple[str, str]]:
    """The grpc-status (and percent-encoded grpc-message) headers of trailers."""
    headers = [("grpc-status", str(int(status)))]
    if message:
        headers.append(("grpc-message", encode_grpc_message(message)))
    return headers


class GrpcProtocolError(Exception):
    """The peer broke HTTP/2; send data_to_send() (a GOAWAY may be queued) and close."""


#: h2 events after which a stream may send more: a WINDOW_UPDATE, or SETTINGS raising
#: INITIAL_WINDOW_SIZE (h2 grows every stream's window then, without a WindowUpdated).
WINDOW_EVENTS = (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)


class H2Endpoint:
    """One end of an HTTP/2 connection, sans-IO: the h2 plumbing gRPC's client and server share.

    Args:
        client_side: which end this is.
    """

    def __init__(self, *, client_side: bool) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.initiate_connection()

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket now (may be empty)."""
        return bytes(self._h2.data_to_send())

    def close(self) -> None:
        """Queue a GOAWAY; send data_to_send() before closing the socket."""
        try:
            self._h2.close_connection()
        except h2.exceptions.H2Error:
            pass

    def _receive_h2(self, data: bytes) -> list[h2.events.Event]:
        """Feed bytes to h2; every way the peer can break HTTP/2 becomes GrpcProtocolError.

        UnicodeDecodeError: header bytes that are not UTF-8 (h2 decodes them for us);
        left unmapped it escaped every caller's error handling.
        """
        try:
            return list(self._h2.receive_data(data))
        except (h2.exceptions.H2Error, hyperframe.exceptions.HyperframeError, UnicodeDecodeError) as exc:
            raise GrpcProtocolError(str(exc) or type(exc).__name__) from None

    def _send_windowed(self, stream_id: int, pending: bytearray, *, end_stream: bool = False) -> bool:
        """Send as much of ``pending`` as the peer's windows allow, removing what was sent.

        A slow reader must never make us violate its window: the rest waits
        for one of WINDOW_EVENTS. With ``end_stream`` the last chunk carries
        END_STREAM. Returns True once ``pending`` is empty.
        """
        while pending:
            room = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if room <= 0:
                return False
            chunk = bytes(pending[:room])
            del pending[:room]
            self._h2.send_data(stream_id, chunk, end_stream=end_stream and not pending)
        return True
