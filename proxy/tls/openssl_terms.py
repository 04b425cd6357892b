"""What both TLS engines say to OpenSSL, and how they read what it says back.

One copy for the compiled engine (_fastpath_tls.pxi) and the reference
engine (engine_py_tls.py): the TLS 1.2 cipher list, the session-id context,
and the table that turns OpenSSL's reason strings into a HandshakeFailure.
Both engines must report the same failure for the same peer, and a second
copy of this table is how they drift apart.
"""

from __future__ import annotations

from proxy.errors import HandshakeFailure

# TLS 1.2 is the floor; only forward-secret AEAD suites. TLS 1.3's own
# suites are all AEAD, so OpenSSL's defaults stay.
TLS12_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

# A server must name a session-id context or OpenSSL refuses to resume
# sessions that carried a client certificate.
SESSION_ID_CONTEXT = b"spiffe-sidecar"

# OpenSSL reason strings (lower case, matched as substrings) -> why the handshake failed.
REASON_TABLE: tuple[tuple[str, HandshakeFailure], ...] = (
    ("peer did not return a certificate", HandshakeFailure.NO_CLIENT_CERT),
    ("certificate required", HandshakeFailure.NO_CLIENT_CERT),
    ("unexpected eof", HandshakeFailure.PEER_CLOSED),
    ("wrong version number", HandshakeFailure.NOT_TLS),
    ("http request", HandshakeFailure.NOT_TLS),
    ("https proxy request", HandshakeFailure.NOT_TLS),
    ("unknown protocol", HandshakeFailure.NOT_TLS),
    ("packet length too long", HandshakeFailure.NOT_TLS),
    ("record layer failure", HandshakeFailure.NOT_TLS),
    ("unexpected message", HandshakeFailure.NOT_TLS),
    ("alert bad certificate", HandshakeFailure.VERIFY),
    ("alert unknown ca", HandshakeFailure.VERIFY),
    ("alert certificate", HandshakeFailure.VERIFY),
    ("alert unsupported certificate", HandshakeFailure.VERIFY),
    ("certificate verify failed", HandshakeFailure.VERIFY),
)


def classify_tls_error(detail: str) -> HandshakeFailure:
    """Map OpenSSL's error text to a HandshakeFailure (a metric label)."""
    low = detail.lower()
    for marker, reason in REASON_TABLE:
        if marker in low:
            return reason
    return HandshakeFailure.PROTOCOL
