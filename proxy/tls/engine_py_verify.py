"""The reference engine's SPIFFE verification inside the handshake, so a bad peer gets an alert.

The compiled engine verifies in OpenSSL's certificate-verify callback and
refuses a bad peer during the handshake with the alert its X509 error maps
to (bad_certificate, certificate_expired, ...). The reference engine does
the same here, and two things pyOpenSSL's public ``set_verify`` cannot do
are why this goes through its cffi binding:

- the verdict must set the X509 error (it picks the alert), and
  ``set_verify``'s callback can only say yes or no;
- on a server, OpenSSL fills SSL_get_peer_cert_chain only after the
  verification, so the callback cannot see the chain the client sent. A
  message callback keeps the certificate list of the peer's Certificate
  message instead: exactly what the compiled engine gets from
  X509_STORE_CTX_get0_untrusted (same certificates, same order), so both
  engines judge the same input.

The message callback runs for every record (OpenSSL has no per-message
filter), so it returns at its first test for anything but the peer's
Certificate message.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

_HANDSHAKE_RECORD = 22  # SSL3_RT_HANDSHAKE
_CERTIFICATE_MESSAGE = b"\x0b"
_TLS1_3 = 0x0304
_APPLICATION_VERIFICATION = 50  # X509_V_ERR_APPLICATION_VERIFICATION


class HandshakeVerifier(Protocol):
    """What a connection offers the callbacks (proxy.tls.engine_py_tls.TlsConnection)."""

    def peer_certificates_received(self, chain: list[bytes] | None) -> None:
        """The peer's Certificate message arrived (None: unreadable); a verdict before it is void."""

    def verify_in_handshake(self) -> int:
        """Verify the peer once per Certificate message; 0 (X509_V_OK) to go on, else the X509 error."""


def install(ctx: SSL.Context) -> None:
    """Make ctx's connections verify peers with HandshakeVerifier (see attach)."""
    raw = ctx._context
    _lib.SSL_CTX_set_verify(raw, SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _VERIFY_CALLBACK)
    _lib.SSL_CTX_set_msg_callback(raw, _MESSAGE_CALLBACK)


def attach(conn: SSL.Connection, verifier: HandshakeVerifier) -> None:
    """Route conn's callbacks to verifier (weakly: the connection must not keep it alive)."""
    conn.set_app_data(weakref.ref(verifier))


def certificate_list(message: bytes, tls13: bool) -> list[bytes]:
    """The DER certificates of a Certificate handshake message (RFC 5246 §7.4.2, RFC 8446 §4.4.2).

    Raises:
        ValueError: the message is truncated or its lengths disagree.
    """
    pos = 4  # msg_type, uint24 length
    if tls13:
        pos += 1 + message[pos]  # certificate_request_context
    end = pos + 3 + int.from_bytes(message[pos:pos + 3], "big")
    pos += 3
    out: list[bytes] = []
    while pos < end:
        size = int.from_bytes(message[pos:pos + 3], "big")
        out.append(message[pos + 3:pos + 3 + size])
        pos += 3 + size
        if tls13:
            pos += 2 + int.from_bytes(message[pos:pos + 2], "big")  # per-certificate extensions
    if pos != end or end != len(message) or any(not der for der in out):
        raise ValueError("malformed Certificate message")
    return out


def _verifier(ssl: Any) -> HandshakeVerifier | None:
    conn = SSL.Connection._reverse_mapping.get(ssl)
    ref = conn.get_app_data() if conn is not None else None
    return ref() if isinstance(ref, weakref.ref) else None


def _on_message(write_p: int, version: int, content_type: int, buf: Any, length: int, ssl: Any, arg: Any) -> None:
    if write_p or content_type != _HANDSHAKE_RECORD or length < 4:
        return
    data = _ffi.buffer(buf, length)
    if data[0:1] != _CERTIFICATE_MESSAGE:
        return
    verifier = _verifier(ssl)
    if verifier is None:
        return
    try:
        chain: list[bytes] | None = certificate_list(bytes(data), version == _TLS1_3)
    except (ValueError, IndexError):
        chain = None  # verified as "no readable chain": refused
    verifier.peer_certificates_received(chain)


def _on_verify(ok: int, store_ctx: Any) -> int:
    try:
        ssl = _lib.X509_STORE_CTX_get_ex_data(store_ctx, _lib.SSL_get_ex_data_X509_STORE_CTX_idx())
        verifier = _verifier(ssl)
        code = verifier.verify_in_handshake() if verifier is not None else _APPLICATION_VERIFICATION
    except BaseException:  # noqa: BLE001 - no Python error may let a peer in
        code = _APPLICATION_VERIFICATION
    _lib.X509_STORE_CTX_set_error(store_ctx, code)
    return 1 if code == 0 else 0


_VERIFY_CALLBACK = _ffi.callback("int (*)(int, X509_STORE_CTX *)", _on_verify)
_MESSAGE_CALLBACK = _ffi.callback("void (*)(int, int, int, const void *, size_t, SSL *, void *)", _on_message)
