# Connections: the handshake step on a borrowed fd, SPIFFE verification
# inside the handshake, the resumed-session checks, re-authentication's
# request, shutdown. Included by _fastpath.pyx.
#
# Verification runs in SSL_CTX_set_cert_verify_callback, which replaces
# OpenSSL's whole chain check: the callback receives the peer's leaf and
# the certificates it sent, runs the SPIFFE leaf rules, picks the store of
# the trust domain the leaf claims, and runs X509_verify_cert against only
# that store. A failure is remembered on the connection (found through the
# SSL's app data) so handshake() raises VerificationError with the reason,
# and OpenSSL sends the peer an alert.
#
# The contexts a connection runs on (SSL_CTX from DER, sessions) are in
# _fastpath_context.pxi.

cdef int _cert_verify_cb(X509_STORE_CTX* xctx, void* arg) noexcept with gil:
    cdef SSL* ssl = <SSL*>X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx())
    cdef void* p = SSL_get_ex_data(ssl, _APP_DATA) if ssl != NULL else NULL
    if p == NULL:
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION)
        return 0
    return (<TlsConnection>p).verify_in_handshake(xctx)


# --- One connection -----------------------------------------------------------------


@cython.final
cdef class TlsConnection:
    """One TLS connection over a borrowed fd; see proxy.tls.engine for the contract."""

    cdef SSL* ssl
    cdef _Context context
    cdef bint server
    cdef bint verified
    cdef object session_key
    cdef object verify_error
    cdef readonly str peer_spiffe_id
    cdef readonly double peer_not_after
    cdef readonly str version
    cdef readonly str cipher
    cdef readonly bint resumed
    cdef public bint session_offered
    cdef bint resumable
    cdef _SessionTag* tag
    cdef _Reauth reauth  # post-handshake re-authentication (_fastpath_reauth.pxi)

    def __cinit__(self, _Context context not None, int fd, bint server, object session_key=None):
        self.context = context
        self.server = server
        self.session_key = session_key
        self.peer_spiffe_id = ""
        self.version = ""
        self.cipher = ""
        self.resumable = True
        self.ssl = SSL_new(context.ctx)
        if self.ssl == NULL or SSL_set_fd(self.ssl, fd) != 1:
            raise TlsError(HandshakeFailure.INTERNAL, _ssl_error_detail())
        # Borrowed pointer: the SSL never outlives this object (freed in close).
        SSL_set_ex_data(self.ssl, _APP_DATA, <void*>self)
        if server:
            SSL_set_accept_state(self.ssl)
        else:
            SSL_set_connect_state(self.ssl)

    def __dealloc__(self):
        self.free_tls()

    cdef void free_tls(self) noexcept:
        if self.ssl != NULL:
            SSL_free(self.ssl)
            self.ssl = NULL
        if self.tag != NULL:  # after SSL_free: the callback can no longer see it
            free(self.tag.key)
            free(self.tag)
            self.tag = NULL

    cdef int tag_for_sessions(self, _SessionInbox* inbox) except -1:
        """Let the new-session callback file this connection's sessions under its key."""
        key = self.session_key.encode("utf-8", "surrogateescape")
        cdef _SessionTag* tag = <_SessionTag*>calloc(1, sizeof(_SessionTag))
        if tag == NULL:
            raise MemoryError()
        tag.key = <char*>malloc(len(key) + 1)
        if tag.key == NULL:
            free(tag)
            raise MemoryError()
        memcpy(tag.key, <const char*>key, len(key))
        tag.key_len = len(key)
        tag.inbox = inbox
        self.tag = tag
        SSL_set_ex_data(self.ssl, _tag_index, <void*>tag)
        return 0

    cdef int no_resumption(self) except -1:
        """Server side: resume nothing on this connection and keep nothing it makes."""
        self.resumable = False
        SSL_set_num_tickets(self.ssl, 0)
        SSL_set_session_id_context(self.ssl, _NO_RESUMPTION_CONTEXT, len(_NO_RESUMPTION_CONTEXT))
        return 0

    def forget_session(self):
        """The peer was refused (or must not resume): keep no session of this connection.

        Server: the session leaves the context's cache now, with the peer
        chain it holds. Client: sessions that arrive later are not cached.
        Idempotent; a no-op once closed.
        """
        cdef SSL_SESSION* sess
        if self.tag != NULL:
            self.tag.verified = False
        if self.ssl == NULL or not self.server:
            return
        sess = SSL_get_session(self.ssl)
        if sess != NULL:
            SSL_CTX_remove_session(self.context.ctx, sess)

    cdef SSL* live(self) except NULL:
        if self.ssl == NULL:
            raise TlsError(HandshakeFailure.INTERNAL, "connection is closed")
        return self.ssl

    # -- handshake --

    def handshake(self):
        """Advance the handshake one step: DONE, WANT_READ or WANT_WRITE."""
        cdef SSL* ssl = self.live()
        cdef int r, err, saved
        if self.verified:
            return DONE
        ERR_clear_error()
        r = SSL_do_handshake(ssl)
        saved = errno
        if r == 1:
            self.finish_handshake(ssl)
            return DONE
        err = SSL_get_error(ssl, r)
        if err == SSL_ERROR_WANT_READ:
            return WANT_READ
        if err == SSL_ERROR_WANT_WRITE:
            return WANT_WRITE
        if self.verify_error is not None:
            ERR_clear_error()
            raise self.verify_error
        raise _tls_failure(err, saved, "handshake failed")

    cdef int finish_handshake(self, SSL* ssl) except -1:
        self.version = SSL_get_version(ssl).decode()
        self.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).decode()
        self.resumed = SSL_session_reused(ssl) == 1
        if self.resumed:
            self.verify_resumed(ssl)
        elif not self.peer_spiffe_id:
            raise TlsError(HandshakeFailure.INTERNAL, "handshake completed without peer verification")
        self.verified = True
        if not self.resumable:
            self.forget_session()  # TLS 1.2 caches at the end of every full handshake
        if self.tag != NULL:
            self.tag.verified = True  # from now on its sessions may be cached
        return 0

    cdef int verify_resumed(self, SSL* ssl) except -1:
        cdef X509* leaf = SSL_get0_peer_certificate(ssl)
        if leaf == NULL:
            raise VerificationError(VerifyFailure.NO_CERTIFICATE, "resumed session has no peer certificate")
        sid, td = _check_leaf(leaf)
        if td not in self.context.stores:
            raise VerificationError(VerifyFailure.UNKNOWN_TRUST_DOMAIN, f"{sid}: no bundle for trust domain {td!r}")
        not_after = _asn1_time_unix(X509_get0_notAfter(leaf))
        if <double>time(NULL) > not_after:
            raise VerificationError(VerifyFailure.EXPIRED, f"{sid}: certificate expired")
        self.peer_spiffe_id = sid
        self.peer_not_after = not_after
        return 0

    cdef int verify_in_handshake(self, X509_STORE_CTX* xctx) noexcept:
        """The SPIFFE check, from the verify callback: 1 to go on, 0 to abort with an alert."""
        cdef X509* leaf = X509_STORE_CTX_get0_cert(xctx)
        cdef int code = X509_V_ERR_CERT_REJECTED
        try:
            if leaf == NULL:
                raise VerificationError(VerifyFailure.NO_CERTIFICATE, "peer sent no certificate")
            sid, td = _check_leaf(leaf)
            ts = self.context.stores.get(td)
            if ts is None:
                raise VerificationError(VerifyFailure.UNKNOWN_TRUST_DOMAIN, f"{sid}: no bundle for trust domain {td!r}")
            _check_strength(<_TrustStore>ts, leaf, X509_STORE_CTX_get0_untrusted(xctx), sid)
            _verify_path(<_TrustStore>ts, leaf, X509_STORE_CTX_get0_untrusted(xctx), time(NULL), sid)
            self.peer_not_after = _asn1_time_unix(X509_get0_notAfter(leaf))
            self.peer_spiffe_id = sid
            return 1
        except VerificationError as exc:
            self.verify_error = exc
            if exc.reason is VerifyFailure.EXPIRED:
                code = X509_V_ERR_CERT_HAS_EXPIRED
            elif exc.reason is VerifyFailure.NOT_YET_VALID:
                code = X509_V_ERR_CERT_NOT_YET_VALID
            elif exc.reason is VerifyFailure.UNTRUSTED_CHAIN or exc.reason is VerifyFailure.UNKNOWN_TRUST_DOMAIN:
                code = X509_V_ERR_CERT_UNTRUSTED
        except BaseException as exc:
            self.verify_error = TlsError(HandshakeFailure.INTERNAL, f"peer verification crashed: {exc!r}")
        X509_STORE_CTX_set_error(xctx, code)
        return 0

    # -- re-authentication (server; see _fastpath_reauth.pxi) --

    def request_reauth(self):
        """Ask the peer for its certificate again: DONE, WANT_WRITE/WANT_READ (call again), or CANNOT_REAUTH.

        Call only while no TLS write is pending (see _fastpath_reauth.pxi).
        """
        cdef SSL* ssl = self.live()
        cdef int r
        if not self.server:
            raise TlsError(HandshakeFailure.INTERNAL, "only a server asks for the peer's certificate again")
        r = _reauth_request(ssl, &self.reauth)
        if r == -1:
            return CANNOT_REAUTH
        if r == REAUTH_ERROR:
            raise _tls_failure(SSL_ERROR_SSL, 0, "post-handshake certificate request failed")
        return r

    def reauth_answered(self):
        """True (once) when the peer's answer was read in full; peer_spiffe_id/peer_not_after are then its."""
        if self.reauth.state != REAUTH_DONE:
            return False
        self.reauth.state = REAUTH_IDLE
        return True

    @property
    def reauth_pending(self):
        """True between a request and its complete answer."""
        return self.reauth.state == REAUTH_REQUESTED or self.reauth.state == REAUTH_CERT_SEEN

    @property
    def verify_failure(self):
        """The last peer verification failure (a VerificationError), or None."""
        return self.verify_error

    # -- shutdown and close --

    def shutdown(self):
        """Send close_notify: DONE, or WANT_WRITE to call again when writable."""
        cdef SSL* ssl = self.live()
        cdef int r, err, saved
        ERR_clear_error()
        r = SSL_shutdown(ssl)
        saved = errno
        if r >= 0:
            return DONE
        err = SSL_get_error(ssl, r)
        if err == SSL_ERROR_WANT_WRITE:
            return WANT_WRITE
        if err == SSL_ERROR_WANT_READ:
            return WANT_READ
        raise _tls_failure(err, saved, "shutdown failed")

    def close(self):
        """Free the TLS state (idempotent). The fd stays open: the runtime owns it."""
        self.free_tls()
