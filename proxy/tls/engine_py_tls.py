"""The reference engine's contexts and connections (pyOpenSSL): see engine_py.py's theory of operation.

Split from engine_py.py by flow, as the compiled engine is split into .pxi
files: this module builds contexts, steps handshakes and verifies peers;
engine_py.py adds the relay (the part that touches plain sockets).
"""

from __future__ import annotations

import weakref
import time
from typing import Any, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from proxy.errors import HandshakeFailure, TlsError, VerificationError, VerifyFailure
from proxy.tls import engine_py_verify
from proxy.tls.contract import DONE, WANT_READ, WANT_WRITE
from proxy.tls import contract
from proxy.tls.engine_py_reauth import IdentityPointers, ServerReauth, offer_post_handshake_auth
from proxy.tls.engine_py_errors import ssl_detail, tls_error
from proxy.tls.engine_py_spiffe import check_chain_size, verify_x509_svid_chain
from proxy.tls.material import TlsMaterial
from proxy.tls.openssl_terms import SESSION_ID_CONTEXT, TLS12_CIPHERS, verify_error_code

# Bounded, so a client talking to many upstream keys cannot grow without limit.
MAX_CACHED_SESSIONS = 1024  # session keys (upstreams) remembered
#: Unused sessions kept per key: each is offered once (single-use tickets, see _fastpath_tls.pxi).
SESSIONS_PER_KEY = 32


# --- Contexts -----------------------------------------------------------------


def _load_identity(ctx: SSL.Context, material: TlsMaterial) -> None:
    """Our chain and key into ctx; any failure is TlsError(INTERNAL), as in the compiled engine.

    Material is validated when it arrives, so a failure here is our bug or a
    corrupt snapshot, never the peer's doing: callers (identity swap, tests)
    catch one error type from either engine, with the same wording, instead
    of pyOpenSSL's and cryptography's own exceptions leaking through.
    """
    if not material.chain_der:
        raise TlsError(HandshakeFailure.INTERNAL, "TLS material has no certificate chain")
    for i, der in enumerate(material.chain_der):
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
        except ValueError:
            raise TlsError(HandshakeFailure.INTERNAL, f"our chain_der[{i}] is not a DER certificate") from None
        try:
            if i == 0:
                ctx.use_certificate(cert)
            else:
                ctx.add_extra_chain_cert(cert)
        except SSL.Error as exc:
            raise TlsError(HandshakeFailure.INTERNAL, f"cannot use our chain_der[{i}]: {ssl_detail(exc)}") from None
    try:
        key = serialization.load_der_private_key(bytes(material.key_der), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError: an encrypted key (we pass no password); UnsupportedAlgorithm: a key type this build lacks.
        raise TlsError(HandshakeFailure.INTERNAL, f"our key is not a PKCS#8 DER key: {exc}") from None
    try:
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        ctx.check_privatekey()
    except (SSL.Error, TypeError) as exc:
        # TypeError: pyOpenSSL refuses key types it cannot wrap (X25519 and the like).
        detail = ssl_detail(exc) if isinstance(exc, SSL.Error) else str(exc)
        raise TlsError(HandshakeFailure.INTERNAL, f"our key does not match our certificate: {detail}") from None


def _build_context(material: TlsMaterial, *, server: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    ctx.set_cipher_list(TLS12_CIPHERS)
    _load_identity(ctx, material)
    # SPIFFE verification inside the handshake, as the compiled engine does.
    engine_py_verify.install(ctx)
    # As the compiled engine: no record buffers held by idle connections.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if server:
        ctx.set_alpn_select_callback(_select_alpn)  # selects only for connections that called offer_alpn
        ctx.set_session_id(SESSION_ID_CONTEXT)
        # Unlike the compiled engine, this server keeps no sessions (issue
        # 11.1): a server session holds the peer's whole chain, and the
        # bindings pyOpenSSL drives expose neither SSL_CTX_remove_session
        # nor a cache size or a maximum certificate list, so a refused
        # peer's session (this engine verifies after the handshake, once
        # OpenSSL has cached it) could never be taken out again. No cache
        # and no tickets: every inbound handshake is a full one here.
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    else:
        # The client keeps sessions itself (per session_key), not OpenSSL.
        ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT | SSL.SESS_CACHE_NO_INTERNAL)
    return ctx


class _Context:
    """What server and client contexts share: the material and the SSL.Context."""

    _server = True

    def __init__(self, material: TlsMaterial) -> None:
        self.material = material
        self.generation = material.generation
        self.bundles: Mapping[str, Sequence[bytes]] = material.bundles
        self._ctx = _build_context(material, server=self._server)


class ServerContext(_Context):
    """Accepts TLS from peers that present a valid X.509-SVID of a known trust domain."""

    _server = True

    def __init__(self, material: TlsMaterial, session_cache_bytes: int | None = None) -> None:
        # session_cache_bytes: the compiled engine's cache budget; this server caches nothing.
        super().__init__(material)

    @property
    def cached_session_bytes(self) -> int:
        """Always 0: this engine's server keeps no sessions."""
        return 0

    def new_connection(self, fd: int, resumable: bool = True) -> TlsConnection:
        """A server-side connection on the connected, non-blocking fd (not owned).

        ``resumable`` is accepted for the contract's sake: this engine's
        server never resumes (see _build_context).
        """
        return TlsConnection(self, fd, server=True)


class ClientContext(_Context):
    """Originates TLS with our SVID and verifies the server's SVID; caches sessions."""

    _server = False

    def __init__(self, material: TlsMaterial, identity: contract.ClientIdentity | None = None) -> None:
        super().__init__(material)
        self._sessions: dict[str, list[SSL.Session]] = {}
        self.pointers = IdentityPointers(material.chain_der, material.key_der)
        # Offer post-handshake auth; answer with the newest identity (engine_py_reauth.py).
        self._cert_cb = offer_post_handshake_auth(self._ctx, self, identity)

    def new_connection(self, fd: int, session_key: str | None = None, offer_session: bool = True) -> TlsConnection:
        """A client-side connection; offers the session cached under session_key, if any.

        ``offer_session=False`` makes a full handshake; the session the
        connection brings is still cached under the key.
        """
        conn = TlsConnection(self, fd, server=False, session_key=session_key)
        unused = self._sessions.get(session_key) if session_key is not None and offer_session else None
        if unused:
            conn.ssl.set_session(unused.pop())  # the newest, offered once
            conn.session_offered = True
        return conn

    def drop_sessions(self, session_key: str) -> None:
        """Forget every session cached under session_key (the upstream refused one of them)."""
        self._sessions.pop(session_key, None)

    def cached_sessions(self, session_key: str) -> int:
        """How many unused sessions are cached under session_key (tests, diagnostics)."""
        return len(self._sessions.get(session_key, ()))

    def _store_session(self, key: str, session: SSL.Session) -> None:
        unused = self._sessions.pop(key, None)  # re-inserted: the dict's order is by last use
        if unused is None:
            unused = []
            if len(self._sessions) >= MAX_CACHED_SESSIONS:
                del self._sessions[next(iter(self._sessions))]  # the key used longest ago
        unused.append(session)
        if len(unused) > SESSIONS_PER_KEY:
            del unused[0]  # the oldest
        self._sessions[key] = unused


# --- One connection: handshake, verification, shutdown ----------------------------


class TlsConnection:
    """One TLS connection over a borrowed fd; see proxy.tls.engine for the contract."""

    #: ALPN IDs a server connection accepts, preferred first (offer_alpn); none: no ALPN is selected.
    _alpn_accept: tuple[bytes, ...] = ()

    def __init__(self, context: _Context, fd: int, *, server: bool, session_key: str | None = None) -> None:
        self._context = context
        self._server = server
        self._session_key = session_key
        # pyOpenSSL accepts a bare fd (anything _asFileDescriptor takes), though
        # its annotation only names socket objects.
        conn = SSL.Connection(context._ctx, fd)  # type: ignore[arg-type]
        if server:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
        self._conn: SSL.Connection | None = conn
        self._verified = False
        # Filled by engine_py_verify's callbacks during the handshake.
        self.peer_certificates: list[bytes] | None = None
        self._verify_code: int | None = None
        self._verify_error: VerificationError | TlsError | None = None
        engine_py_verify.attach(conn, self)
        self.peer_spiffe_id = ""
        self.peer_not_after = 0.0
        self.version = ""
        self.cipher = ""
        self.resumed = False
        self.session_offered = False
        self._forgotten = False
        self._reauth = ServerReauth()

    @property
    def ssl(self) -> SSL.Connection:
        """The live pyOpenSSL connection (raises once closed)."""
        if self._conn is None:
            raise TlsError(HandshakeFailure.INTERNAL, "connection is closed")
        return self._conn

    def handshake(self) -> int:
        """Advance the handshake one step: DONE, WANT_READ or WANT_WRITE."""
        conn = self.ssl
        if self._verified:
            return DONE
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            return WANT_READ
        except SSL.WantWriteError:
            return WANT_WRITE
        except SSL.Error as exc:
            if self._verify_error is not None:
                raise self._verify_error from None
            raise tls_error(exc) from None
        self.version = conn.get_protocol_version_name()
        self.cipher = conn.get_cipher_name() or ""
        # pyOpenSSL has no public "was this resumed" call; the binding does.
        self.resumed = bool(SSL._lib.SSL_session_reused(conn._ssl))  # type: ignore[attr-defined]
        check_chain_size(self._peer_chain_der(conn))
        if self.resumed:
            self._verify_resumed_peer(conn)
        elif not self.peer_spiffe_id:
            raise TlsError(HandshakeFailure.INTERNAL, "handshake completed without peer verification")
        self._verified = True
        return DONE

    def peer_certificates_received(self, chain: list[bytes] | None) -> None:
        """Keep the chain the peer just sent; it is verified anew (a later one, e.g. post-handshake auth, too)."""
        self.peer_certificates = chain
        self._verify_code = None

    def verify_in_handshake(self) -> int:
        """SPIFFE verification of the peer's chain, once per chain, from OpenSSL's verify callback.

        Returns 0 to go on, or the X509 error whose alert refuses the peer;
        handshake() then raises the VerificationError kept here.
        """
        if self._verify_code is None:
            try:
                chain = self.peer_certificates
                if not chain:
                    raise VerificationError(VerifyFailure.NO_CERTIFICATE, "no readable certificate from the peer")
                # Before verifying: OpenSSL refuses an oversized Certificate
                # message before the compiled engine's callback ever runs.
                check_chain_size(chain)
                peer_id = verify_x509_svid_chain(chain, self._context.bundles)  # now=None: the current time
                self.peer_not_after = x509.load_der_x509_certificate(chain[0]).not_valid_after_utc.timestamp()
                self.peer_spiffe_id = peer_id
                self._verify_code = 0
            except VerificationError as exc:
                self._verify_error, self._verify_code = exc, verify_error_code(exc.reason)
            except TlsError as exc:
                self._verify_error, self._verify_code = exc, verify_error_code(VerifyFailure.BAD_CERTIFICATE)
            except Exception as exc:  # noqa: BLE001 - a crash refuses the peer, and says so
                self._verify_error = TlsError(HandshakeFailure.INTERNAL, f"peer verification crashed: {exc!r}")
                self._verify_code = verify_error_code(VerifyFailure.BAD_CERTIFICATE)
        return self._verify_code

    def _peer_chain_der(self, conn: SSL.Connection) -> list[bytes]:
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            raise VerificationError(VerifyFailure.NO_CERTIFICATE, "peer sent no certificate")
        leaf_der = leaf.public_bytes(serialization.Encoding.DER)
        rest = [c.public_bytes(serialization.Encoding.DER) for c in conn.get_peer_cert_chain(as_cryptography=True) or []]
        # OpenSSL's peer chain includes the leaf on the client side only.
        if rest and rest[0] == leaf_der:
            rest = rest[1:]
        return [leaf_der, *rest]

    def _verify_resumed_peer(self, conn: SSL.Connection) -> None:
        """A resumed handshake skips the verify callback: re-check the session's leaf."""
        chain = self._peer_chain_der(conn)
        peer_id = self._verify_resumed(chain[0])
        # The engine reads the wall clock here, once per handshake, as OpenSSL
        # does in the compiled engine (the fd-based engines are the measured
        # exception to the sans-IO rule); the SPIFFE core only gets `now`.
        not_after = x509.load_der_x509_certificate(chain[0]).not_valid_after_utc.timestamp()
        if time.time() > not_after:
            raise VerificationError(VerifyFailure.EXPIRED, f"{peer_id}: certificate expired")
        self.peer_spiffe_id = peer_id
        self.peer_not_after = not_after

    def _verify_resumed(self, leaf_der: bytes) -> str:
        """Leaf rules and trust domain of a resumed session's peer (the chain was checked when it was made)."""
        from proxy.spiffe.svid import leaf_profile_failure, load_certificate, spiffe_id_from_certificate

        sid = spiffe_id_from_certificate(load_certificate(leaf_der))
        failure = leaf_profile_failure(load_certificate(leaf_der), sid)
        if failure is not None:
            raise VerificationError(failure[0], f"{sid}: {failure[1]}")
        if sid.trust_domain.name not in self._context.bundles:
            raise VerificationError(VerifyFailure.UNKNOWN_TRUST_DOMAIN, f"{sid}: no bundle for its trust domain")
        return str(sid)

    def forget_session(self) -> None:
        """The peer was refused: keep no session of this connection (the server keeps none anyway)."""
        self._forgotten = True
    # -- re-authentication (server; see engine_py_reauth.py) --

    def request_reauth(self) -> int:
        """Ask the peer for its certificate again: DONE, WANT_WRITE/WANT_READ (call again), or CANNOT_REAUTH."""
        if not self._server:
            raise TlsError(HandshakeFailure.INTERNAL, "only a server asks for the peer's certificate again")
        try:
            return self._reauth.request(self.ssl)
        except SSL.Error as exc:
            raise tls_error(exc) from None

    def reauth_answered(self) -> bool:
        """True (once) when the peer's answer was read in full; peer_spiffe_id/peer_not_after are then its.

        The chain was verified inside the exchange (engine_py_verify, as in the
        handshake): a bad one was refused there with an alert, the relay's read
        failed, and ``verify_failure`` says why.
        """
        return self._reauth.take_answer()

    @property
    def reauth_pending(self) -> bool:
        """True between a request and its complete answer."""
        return self._reauth.pending

    @property
    def verify_failure(self) -> VerificationError | None:
        """The last peer verification failure (a VerificationError), or None."""
        return self._verify_error if isinstance(self._verify_error, VerificationError) else None

    def shutdown(self) -> int:
        """Send close_notify: DONE, or WANT_WRITE to call again when writable."""
        try:
            self.ssl.shutdown()
        except SSL.WantWriteError:
            return WANT_WRITE
        except SSL.WantReadError:
            return WANT_READ
        except SSL.Error as exc:
            raise tls_error(exc) from None
        return DONE

    def close(self) -> None:
        """Free the TLS state (idempotent). The fd stays open: the runtime owns it.

        A verified client connection leaves its session for resumption: by
        now any TLS 1.3 tickets the server sent have been read.
        """
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._verified and not self._server and self._session_key is not None and not self._forgotten:
            session = conn.get_session()
            if session is not None and isinstance(self._context, ClientContext):
                self._context._store_session(self._session_key, session)


# --- The server's ALPN selection (twin of _fastpath_http.pxi; the rest: engine_py_alpn.py)


def _select_alpn(conn: SSL.Connection, offered: list[bytes]) -> Any:
    """Server preference: the first protocol this connection accepts that the client offered."""
    ref = conn.get_app_data()  # the TlsConnection, weakly (engine_py_verify.attach)
    owner = ref() if isinstance(ref, weakref.ref) else None
    for proto in owner._alpn_accept if isinstance(owner, TlsConnection) else ():
        if proto in offered:
            return bytes(proto)
    return SSL.NO_OVERLAPPING_PROTOCOLS
