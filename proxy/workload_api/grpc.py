"""What both ends of gRPC-over-HTTP/2 share: status codes, framing, headers.

Why not grpcio: the agent must read each caller's kernel credentials
(SO_PEERCRED) from the accepted Unix socket, and grpcio hides the socket
(grpc/grpc#15511, #28755). The Workload API needs only unary and
server-streaming calls, so a small layer on h2 is enough. This module holds
the parts shared by the server (grpc_server.py) and the client
(grpc_client.py); neither does I/O.

Wire format (gRPC over HTTP/2 spec): each message is a 5-byte prefix
(1-byte compressed flag, 4-byte big-endian length) followed by the
protobuf bytes; the call ends with trailers carrying grpc-status and a
percent-encoded grpc-message.
"""

from __future__ import annotations

import enum
import struct
import urllib.parse

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
