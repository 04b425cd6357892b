"""The reference engine's re-authentication of a live peer (issue 11.2): twin of _fastpath_reauth.pxi.

pyOpenSSL has no API for TLS 1.3 post-handshake authentication, but the
OpenSSL bindings under it (``OpenSSL._util.lib``, cryptography's) expose
every call it needs: SSL_verify_client_post_handshake on the server,
SSL_CTX_set_post_handshake_auth and SSL_CTX_set_cert_cb on the client, and
SSL_set_info_callback to follow the server's read states. So this engine
does what the compiled one does. The answer's chain goes through the same
in-exchange SPIFFE verification as the handshake's (engine_py_verify: a bad
chain gets an alert and the relay's read fails); the one difference is that
the bindings cannot turn off the session tickets OpenSSL mints after the
answer, so they are written from inside the SSL_read that reads it.

The client's cert callback runs on the event loop (this engine never
relays on a thread), so it may read the newest context from Python.
"""

from __future__ import annotations

from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi, lib

from proxy.tls import contract
from proxy.tls.contract import DONE, WANT_READ, WANT_WRITE

#: request() result: the peer cannot be asked (TLS 1.2, or no post_handshake_auth offered). Same as the compiled engine.
CANNOT_REAUTH = 3

# The server's read states in an answer, by OpenSSL's long state names (stable since 1.1.1).
_READ_CERT = b"SSLv3/TLS read client certificate"
_READ_FINISHED = b"SSLv3/TLS read finished"

IDLE, REQUESTED, CERT_SEEN, DONE_STATE = range(4)


class ClientIdentity:
    """The newest client context of a sidecar (twin of the compiled ClientIdentity)."""

    def __init__(self) -> None:
        self.current: Any = None

    def publish(self, context: contract.ClientContext) -> None:
        """Make ``context`` (a ClientContext) the identity presented from now on."""
        self.current = context


class IdentityPointers:
    """A client context's leaf and key as OpenSSL pointers, for SSL_use_certificate in the cert callback."""

    def __init__(self, chain_der: Any, key_der: bytes) -> None:
        # The pyOpenSSL objects own the pointers: keep them for the context's life.
        self._leaf = crypto.X509.from_cryptography(x509.load_der_x509_certificate(bytes(chain_der[0])))
        key = serialization.load_der_private_key(bytes(key_der), password=None)
        self._key = crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]

    def use_on(self, ssl: Any) -> None:
        lib.SSL_use_certificate(ssl, self._leaf._x509)
        lib.SSL_use_PrivateKey(ssl, self._key._pkey)


def offer_post_handshake_auth(ctx: SSL.Context, owner: Any, identity: contract.ClientIdentity | None) -> Any:
    """Client side: offer PHA and answer every certificate request with ``identity``'s newest context.

    Returns the cffi callback, which the caller keeps alive as long as ``ctx``.
    """
    lib.SSL_CTX_set_post_handshake_auth(ctx._context, 1)
    if identity is None:
        return None

    cell = identity if isinstance(identity, ClientIdentity) else None  # another engine's cell answers nothing

    @ffi.callback("int(SSL *, void *)")  # type: ignore[untyped-decorator]
    def newest_identity(ssl: Any, arg: Any) -> int:
        newest = cell.current if cell is not None else None
        if newest is not None and newest is not owner:
            newest.pointers.use_on(ssl)
        lib.ERR_clear_error()
        return 1

    lib.SSL_CTX_set_cert_cb(ctx._context, newest_identity, ffi.NULL)
    return newest_identity


class ServerReauth:
    """One server connection's re-authentication: request, then follow the answer's read states."""

    def __init__(self) -> None:
        self.state = IDLE
        self._callback: Callable[..., None] | None = None

    def request(self, conn: SSL.Connection) -> int:
        """DONE, WANT_WRITE/WANT_READ (call again), or CANNOT_REAUTH."""
        ssl = conn._ssl
        if self.state == IDLE:
            if conn.get_protocol_version_name() != "TLSv1.3":
                return CANNOT_REAUTH
            self._follow(ssl)
            if lib.SSL_verify_client_post_handshake(ssl) != 1:
                lib.ERR_clear_error()  # "extension not received": no post_handshake_auth from the client
                return CANNOT_REAUTH
            self.state = REQUESTED
        try:
            conn.do_handshake()
        except SSL.WantWriteError:
            return WANT_WRITE
        except SSL.WantReadError:
            return WANT_READ
        return DONE

    def _follow(self, ssl: Any) -> None:
        @ffi.callback("void(SSL *, int, int)")  # type: ignore[untyped-decorator]
        def on_state(ssl: Any, where: int, ret: int) -> None:
            if not where & lib.SSL_CB_ACCEPT_LOOP:
                return
            state = ffi.string(lib.SSL_state_string_long(ssl))
            if state == _READ_CERT and self.state == REQUESTED:
                self.state = CERT_SEEN
            elif state == _READ_FINISHED and self.state == CERT_SEEN:
                self.state = DONE_STATE

        self._callback = on_state  # alive as long as the connection
        lib.SSL_set_info_callback(ssl, on_state)

    def take_answer(self) -> bool:
        """True (once) when the answer was read in full."""
        if self.state != DONE_STATE:
            return False
        self.state = IDLE
        return True

    @property
    def pending(self) -> bool:
        return self.state in (REQUESTED, CERT_SEEN)
