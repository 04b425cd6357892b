"""The reference TLS engine, on pyOpenSSL: readable, and the fallback.

Theory of operation
===================

This module implements the engine contract of ``proxy.tls.engine`` with
pyOpenSSL. The compiled engine (``proxy._fastpath``) implements the same
contract in Cython against OpenSSL; this one exists so that every behaviour
of the hot path has a version a reviewer can read in one sitting, and so
that the sidecar still runs where the extension cannot be built.

Sockets. The runtime owns every socket. It hands us a connected,
non-blocking file descriptor and we give pyOpenSSL that *integer*
(``SSL.Connection(ctx, fd)``): OpenSSL then reads and writes the fd itself,
and no Python socket object exists that could close it behind the
runtime's back. When OpenSSL would block, pyOpenSSL raises WantReadError or
WantWriteError; we turn those into WANT_READ / WANT_WRITE (or, in the relay,
WANT_TLS_READ / WANT_TLS_WRITE) and the runtime waits for readiness and
calls the same method again. One readiness event, one engine call.

Verification. SPIFFE peer verification is not WebPKI verification: no
hostnames, exactly one URI SAN, and a peer is checked only against the
authorities of the trust domain its SPIFFE ID names (bundles are never
merged into one store). OpenSSL's own chain check would use one merged
store and WebPKI rules, so it is replaced: OpenSSL's verify callback runs
the SPIFFE verification on the chain the peer sent and, on a failure, sets
the X509 error that makes OpenSSL send the peer the alert the compiled
engine sends (bad_certificate, certificate_expired...) and abort the
handshake; handshake() then raises the VerificationError. That takes
pyOpenSSL's cffi binding, not its set_verify: engine_py_verify.py says why.

Resumption. Sessions are cached per ClientContext, keyed by the caller's
session_key: a context lives for exactly one identity/bundle generation, so
a session is only ever offered back with the same identity and the same
trust bundles. A server context's ticket keys also die with the context,
so a bundle change invalidates every ticket. A resumed handshake does not
re-run the chain check (the ticket is proof that this very context already
did), but it re-reads the peer's SPIFFE ID and NotAfter from the session's
certificate and rejects an expired peer; the caller re-authorizes the
peer's ID on every connection, resumed or not.

Relay. Each direction owns one fixed buffer (``buffer_size`` bytes): read
from one side into it, write it to the other, and do not read again until
it is drained. A slow reader therefore stops the reads on the other side
(the relay returns WANT_PLAIN_WRITE or WANT_TLS_WRITE) instead of growing
memory. Half-close is forwarded both ways: TLS close_notify (or EOF) from
the peer becomes shutdown(SHUT_WR) on the plain socket, and EOF from the
app becomes our close_notify; TLS 1.3 lets the other direction keep
flowing after either. The plain fd is wrapped once, at Relay creation, in
a socket object that is borrowed: dropping it detaches, never closes, so
the runtime stays the fd's only owner (one object per chunk would cost
about twice the relay's own per-chunk work).

Layout: engine_py_tls.py holds the contexts and the handshake,
engine_py_verify.py the in-handshake verification, engine_py_reauth.py
re-authentication, engine_py_spiffe.py the SPIFFE twins, engine_py_alpn.py
the HTTP layer's TLS facts and engine_py_errors.py the error translation;
this module re-exports them and adds the relay, the only part that makes
syscalls on plain sockets.
"""

from __future__ import annotations

import socket

from OpenSSL import SSL

from proxy.tls import contract
from proxy.tls.contract import DONE, WANT_READ, WANT_WRITE
from proxy.tls.engine_py_reauth import CANNOT_REAUTH, ClientIdentity
from proxy.tls.engine_py_alpn import offer_alpn, peer_leaf_der, selected_alpn
from proxy.tls.engine_py_spiffe import parse_spiffe_id, spiffe_id_from_der, verify_x509_svid_chain
from proxy.tls.engine_py_errors import tls_error
from proxy.tls.engine_py_tls import ClientContext, ServerContext, TlsConnection
from proxy.tls.openssl_terms import classify_tls_error

NAME = "python"

__all__ = [
    "NAME", "DONE", "WANT_READ", "WANT_WRITE", "WANT_TLS_READ", "WANT_TLS_WRITE", "WANT_PLAIN_READ",
    "WANT_PLAIN_WRITE", "EOF", "ServerContext", "ClientContext", "TlsConnection", "Relay", "CANNOT_REAUTH",
    "ClientIdentity",
    "parse_spiffe_id", "spiffe_id_from_der", "verify_x509_svid_chain", "classify_tls_error", "openssl_version",
    "offer_alpn", "selected_alpn", "peer_leaf_der",
]


def openssl_version() -> str:
    """The OpenSSL this engine runs on: pyOpenSSL's, i.e. the one cryptography's wheel bundles."""
    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()

# RelayStatus values; the compiled engine uses the same numbers (parity-tested).
WANT_TLS_READ = 1
WANT_TLS_WRITE = 2
WANT_PLAIN_READ = 3
WANT_PLAIN_WRITE = 4
EOF = 5


# --- Relay ------------------------------------------------------------------------


class _Pipe:
    """One direction's bounded buffer: data[start:end] is read but not yet written."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.eof = False  # the source side finished; flush, then forward the EOF
        self.done = False  # EOF forwarded


class Relay:
    """Moves bytes between a TlsConnection and a plaintext fd, one bounded buffer per direction."""

    def __init__(self, conn: contract.TlsConnection, plain_fd: int, buffer_size: int = 65536) -> None:
        if not isinstance(conn, TlsConnection):  # as the compiled Relay's typed argument refuses a stranger
            raise TypeError(f"Relay needs this engine's TlsConnection, not {type(conn).__name__}")
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive")
        self._tls = conn
        # One socket object for the Relay's life, not one per chunk (creating
        # one costs three getsockopt calls: about 2x the relay's per-chunk
        # cost). It is borrowed: dropping it detaches, never closes the fd.
        self._plain = _BorrowedSocket(fileno=plain_fd)
        # Non-blocking at the object too, so a process-wide
        # socket.setdefaulttimeout() can never make a recv wait on the loop.
        self._plain.settimeout(0.0)
        self._down = _Pipe(buffer_size)  # TLS -> plain
        self._up = _Pipe(buffer_size)  # plain -> TLS
        self.bytes_tls_to_plain = 0
        self.bytes_plain_to_tls = 0

    def tls_to_plain(self) -> int:
        """Pump TLS -> plain until something would block; return a RelayStatus."""
        p, conn = self._down, self._tls.ssl
        while True:
            if p.start < p.end:
                try:
                    # MSG_NOSIGNAL: a gone app is EPIPE (an OSError), never SIGPIPE.
                    n = self._plain.send(p.view[p.start:p.end], socket.MSG_NOSIGNAL)
                except BlockingIOError:
                    return WANT_PLAIN_WRITE
                p.start += n
                self.bytes_tls_to_plain += n
                continue
            if p.eof:
                if not p.done:
                    _shutdown_write(self._plain)
                    p.done = True
                return EOF
            p.start = p.end = 0
            try:
                p.end = conn.recv_into(p.buf)
            except SSL.WantReadError:
                return WANT_TLS_READ
            except SSL.WantWriteError:
                return WANT_TLS_WRITE
            except SSL.ZeroReturnError:
                p.eof = True
            except SSL.SysCallError as exc:
                if exc.args[0] not in (-1, 0):
                    raise OSError(exc.args[0], str(exc.args[1])) from None
                p.eof = True  # closed without close_notify: still the end of the stream
            except SSL.Error as exc:
                raise tls_error(exc) from None

    def plain_to_tls(self) -> int:
        """Pump plain -> TLS until something would block; return a RelayStatus."""
        p, conn = self._up, self._tls.ssl
        while True:
            if p.start < p.end:
                try:
                    n = conn.send(p.view[p.start:p.end])
                except SSL.WantWriteError:
                    return WANT_TLS_WRITE
                except SSL.WantReadError:
                    return WANT_TLS_READ
                except SSL.Error as exc:
                    raise _relay_error(exc) from None
                p.start += n
                self.bytes_plain_to_tls += n
                continue
            if p.eof:
                if not p.done:
                    if self._tls.shutdown() != DONE:
                        return WANT_TLS_WRITE
                    p.done = True
                return EOF
            p.start = p.end = 0
            try:
                p.end = self._plain.recv_into(p.buf)
            except BlockingIOError:
                return WANT_PLAIN_READ
            if p.end == 0:
                p.eof = True


def _relay_error(exc: SSL.Error) -> Exception:
    if isinstance(exc, SSL.SysCallError) and exc.args[0] not in (-1, 0):
        return OSError(exc.args[0], str(exc.args[1]))
    return tls_error(exc)


class _BorrowedSocket(socket.socket):
    """A socket object on an fd the runtime owns: when it is dropped it detaches, never closes.

    A plain socket.socket closes its fd when collected; by then the runtime
    may have closed that fd and the number may name another connection.
    Defining __del__ replaces the C finaliser that would close it (also when
    the Relay dies in a reference cycle), and nothing here calls close().
    """

    __slots__ = ()

    def __del__(self) -> None:
        self.detach()


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the app already closed: nothing left to tell it
