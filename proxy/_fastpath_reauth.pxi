# Re-authentication of a live peer (issue 11.2): TLS 1.3 post-handshake
# authentication (RFC 8446 4.6.2) on the server, and the client's newest
# SVID for the answer. Included by _fastpath.pyx before _fastpath_tls.pxi;
# proxy/connection/reauth.py says when and why.
#
# Server. _reauth_request queues a CertificateRequest
# (SSL_verify_client_post_handshake) and flushes it with SSL_do_handshake.
# The answer (Certificate, CertificateVerify, Finished) is read by the
# relay's ordinary SSL_read, on the event loop or on the relay thread: the
# chain goes through the same verify callback as in the handshake (a bad
# chain is refused there with an alert, and the SSL_read fails), and an
# info callback, GIL-free, follows the server's read states so that the
# answer counts only once its Finished was read, that is after
# CertificateVerify proved the key. Only then is the peer's new SPIFFE ID
# and NotAfter (set by the verify callback) reported.
#
# Requests go out only while no TLS write is pending on the connection:
# OpenSSL refuses to interleave a handshake record with a partially written
# application record (SSL_R_BAD_WRITE_RETRY), so the callers wait for a
# moment when neither direction waits for the TLS socket to drain. No new
# session tickets are minted after the answer (SSL_set_num_tickets 0):
# they would be written from inside an SSL_read, the same interleaving.
#
# Client. A live SSL was made from the context of an older identity
# snapshot. ClientIdentity is one cell per sidecar holding the newest
# client SSL_CTX; every client context built with it gets a cert callback
# (GIL-free: it may run on the relay thread) that copies the cell's
# certificate, chain and key onto the SSL when the server asks.

cdef enum:
    REAUTH_IDLE = 0
    REAUTH_REQUESTED = 1    # CertificateRequest queued (maybe not yet flushed)
    REAUTH_CERT_SEEN = 2    # the peer's Certificate was read and verified
    REAUTH_DONE = 3         # its Finished was read: complete
    REAUTH_UNSUPPORTED = 4  # not TLS 1.3, or the client offered no post_handshake_auth
    REAUTH_ERROR = -2       # _reauth_flush: the TLS connection failed (reason in OpenSSL's queue)

cdef struct _Reauth:
    int state

cdef int _reauth_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL)

cdef extern from "openssl/ssl.h" nogil:
    int SSL_set_num_tickets(SSL* s, size_t n)


cdef void _reauth_info_cb(const SSL* ssl, int where, int ret) noexcept nogil:
    cdef _Reauth* r = <_Reauth*>SSL_get_ex_data(ssl, _reauth_index)
    cdef int st
    if r == NULL or (where & SSL_CB_ACCEPT_LOOP) == 0:
        return
    st = SSL_get_state(ssl)
    if st == TLS_ST_SR_CERT and r.state == REAUTH_REQUESTED:
        r.state = REAUTH_CERT_SEEN
    elif st == TLS_ST_SR_FINISHED and r.state == REAUTH_CERT_SEEN:
        r.state = REAUTH_DONE


cdef int _reauth_request(SSL* ssl, _Reauth* r) noexcept nogil:
    """Ask the peer for its certificate: DONE/WANT_WRITE/WANT_READ, REAUTH_ERROR, or -1 (cannot be asked)."""
    if r.state == REAUTH_IDLE:
        ERR_clear_error()
        if SSL_version(ssl) != TLS1_3_VERSION:
            r.state = REAUTH_UNSUPPORTED
            return -1
        SSL_set_ex_data(ssl, _reauth_index, <void*>r)
        SSL_set_info_callback(ssl, _reauth_info_cb)
        SSL_set_num_tickets(ssl, 0)
        if SSL_verify_client_post_handshake(ssl) != 1:
            ERR_clear_error()  # "extension not received": the client did not offer post_handshake_auth
            r.state = REAUTH_UNSUPPORTED
            return -1
        r.state = REAUTH_REQUESTED
    return _reauth_flush(ssl)


cdef int _reauth_flush(SSL* ssl) noexcept nogil:
    """Send what the request queued: DONE, WANT_WRITE (again when writable), WANT_READ, or REAUTH_ERROR."""
    cdef int rc, e
    ERR_clear_error()
    rc = SSL_do_handshake(ssl)
    if rc == 1:
        return 0
    e = SSL_get_error(ssl, rc)
    if e == SSL_ERROR_WANT_WRITE:
        return 2
    if e == SSL_ERROR_WANT_READ:
        return 1
    return REAUTH_ERROR


cdef struct _IdentityCell:
    pthread_mutex_t lock
    SSL_CTX* ctx  # the newest client context (a reference), NULL before the first


cdef int _client_cert_cb(SSL* ssl, void* arg) noexcept nogil:
    # Called by OpenSSL when a server asks for our certificate, in the
    # handshake and after it: present the newest identity, not the one the
    # SSL was made with. Returning 1 always: on a failure below the SSL
    # keeps the certificate it has, and the server judges that.
    cdef _IdentityCell* cell = <_IdentityCell*>arg
    cdef SSL_CTX* newest
    cdef stack_st_X509* chain = NULL
    cdef X509* leaf
    cdef EVP_PKEY* key
    pthread_mutex_lock(&cell.lock)
    newest = cell.ctx
    if newest != NULL and newest != SSL_get_SSL_CTX(ssl):
        leaf = SSL_CTX_get0_certificate(newest)
        key = SSL_CTX_get0_privatekey(newest)
        if leaf != NULL and key != NULL and SSL_use_certificate(ssl, leaf) == 1 \
                and SSL_use_PrivateKey(ssl, key) == 1:
            SSL_CTX_get0_chain_certs(newest, &chain)
            SSL_set1_chain(ssl, chain)
    pthread_mutex_unlock(&cell.lock)
    ERR_clear_error()
    return 1


@cython.final
cdef class ClientIdentity:
    """The newest client context of a sidecar, for the answers to post-handshake requests.

    ``ClientContext(material, identity)`` answers every certificate request
    with what ``publish`` last installed here (see the top of this file).
    """

    cdef _IdentityCell* cell

    def __cinit__(self):
        self.cell = <_IdentityCell*>calloc(1, sizeof(_IdentityCell))
        if self.cell == NULL:
            raise MemoryError()
        pthread_mutex_init(&self.cell.lock, NULL)

    def __dealloc__(self):
        # Every context holding self.cell holds a reference to this object too: none is left.
        if self.cell != NULL:
            if self.cell.ctx != NULL:
                SSL_CTX_free(self.cell.ctx)
            pthread_mutex_destroy(&self.cell.lock)
            free(self.cell)

    def publish(self, context not None):
        """Make ``context`` (a ClientContext) the identity presented from now on."""
        context._publish_into(self)

    cdef int set_ctx(self, SSL_CTX* ctx) except -1:
        cdef SSL_CTX* old
        SSL_CTX_up_ref(ctx)
        with nogil:
            pthread_mutex_lock(&self.cell.lock)
            old = self.cell.ctx
            self.cell.ctx = ctx
            pthread_mutex_unlock(&self.cell.lock)
        if old != NULL:
            SSL_CTX_free(old)
        return 0
