"""What both TLS engines say to OpenSSL, and how they read what it says back.

One copy for the compiled engine (_fastpath_tls.pxi) and the reference
engine (engine_py_tls.py): the TLS 1.2 cipher list, the session-id context,
and the table that turns OpenSSL's reason strings into a HandshakeFailure.
Both engines must report the same failure for the same peer, and a second
copy of this table is how they drift apart.
"""

from __future__ import annotations

from proxy.errors import HandshakeFailure, VerifyFailure

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
# The session-id context of a connection on a listener with session
# resumption off: no cached session matches it, so none is resumed.
NO_RESUMPTION_CONTEXT = b"spiffe-sidecar/no-resumption"

# The most Certificate-message bytes a peer may send (OpenSSL's default is
# 100 KiB). A server session keeps the peer's parsed chain, so this bounds
# what one session can cost; SPIFFE chains (a leaf and a few intermediates)
# are a few KB. A longer chain fails the handshake ("excessive message size").
MAX_CERT_LIST = 16 * 1024

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


# X509 verify errors (x509_vfy.h; stable numbers) the engines leave in the
# X509_STORE_CTX when SPIFFE verification refuses a peer: OpenSSL turns each
# into the alert the peer receives (certificate_expired, bad_certificate...).
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_CERT_UNTRUSTED = 27
X509_V_ERR_CERT_REJECTED = 28

_VERIFY_ERRORS = {
    VerifyFailure.EXPIRED: X509_V_ERR_CERT_HAS_EXPIRED,
    VerifyFailure.NOT_YET_VALID: X509_V_ERR_CERT_NOT_YET_VALID,
    VerifyFailure.UNTRUSTED_CHAIN: X509_V_ERR_CERT_UNTRUSTED,
    VerifyFailure.UNKNOWN_TRUST_DOMAIN: X509_V_ERR_CERT_UNTRUSTED,
}


def verify_error_code(reason: VerifyFailure) -> int:
    """The X509 error for a refused peer (as _fastpath_tls.pxi's verify_in_handshake sets it)."""
    return _VERIFY_ERRORS.get(reason, X509_V_ERR_CERT_REJECTED)
