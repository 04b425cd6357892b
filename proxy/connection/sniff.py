"""Is this the start of a TLS ClientHello? Pure bytes in, bool out.

Part of the sans-IO connection core (it was under interception/, which the
core may not import): permissive inbound mode decides between the mTLS path
and the plaintext path from the first bytes the runtime peeked (MSG_PEEK)
and handed in.
"""

from __future__ import annotations

_TLS_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01


def peek_is_tls_client_hello(data: bytes | bytearray | memoryview) -> bool:
    """True when the first bytes of a connection look like a TLS ClientHello.

    Permissive inbound mode peeks (MSG_PEEK) at the first bytes to route a
    connection to the mTLS path or straight to the app. A TLS record header is
    content type 0x16 (handshake), legacy version 0x03 0x01..0x03 (TLS 1.3
    still writes 0x0301 or 0x0303 here), a two-byte length, then the handshake
    type 0x01 (ClientHello). Six bytes decide; fewer is "not (yet) TLS", so
    the caller should peek until it has six or the peer stops sending.
    """
    if len(data) < 6:
        return False
    content_type, major, minor = data[0], data[1], data[2]
    record_length = (data[3] << 8) | data[4]
    return (
        content_type == _TLS_HANDSHAKE
        and major == 0x03
        and 0x01 <= minor <= 0x03
        and 0 < record_length <= 16384 + 2048
        and data[5] == _CLIENT_HELLO
    )
