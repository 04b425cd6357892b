# Contexts: SSL_CTX from DER bytes (our chain and key, the peer's trust
# domains), and the client session cache. Included by _fastpath.pyx before
# _fastpath_tls.pxi, whose TlsConnection runs on these contexts.
#
# Resumption: a context lives for exactly one identity/bundle generation
# (a rotation builds new contexts), so a new SSL_CTX means a new session
# cache on the server and an empty session cache on the client: a bundle
# change invalidates every session without any bookkeeping. The server
# keeps its sessions in memory (stateful TLS 1.3 tickets, SSL_OP_NO_TICKET)
# rather than in encrypted tickets: OpenSSL 3.0 spends more on decoding a
# ticket's session (d2i_SSL_SESSION re-parses the peer's certificate) than
# on the rest of a resumed handshake, and an in-memory lookup costs nothing.
# Each session is offered once: OpenSSL's stateful tickets are single-use
# (and RFC 8446 C.4 asks clients not to reuse a ticket anyway), and every
# handshake, resumed or not, brings a fresh one, so the client keeps a small
# stack of unused sessions per key and concurrent connections to one
# upstream do not all offer the same, already spent, ticket.
# Client sessions arrive after the handshake, usually in the relay thread
# (see _fastpath_hub.pxi), where Python must not run: the new-session
# callback is GIL-free and drops them in the context's inbox, which the
# next new_connection() empties into the cache. A resumed handshake
# skips the verify callback, so handshake() re-checks the leaf stored in
# the session (SPIFFE ID, leaf rules, known trust domain, NotAfter); the
# chain itself was validated by this very context when the session was made.
#
# What a session may cost (issue 11.1): a server session holds the peer's
# whole parsed chain, so the Certificate message a peer may send is capped
# (_MAX_CERT_LIST: SPIFFE chains are a leaf and a few intermediates, a few
# KB), which bounds each session's size, and the count cap bounds their
# number; and a byte budget (_fastpath_sessions.pxi) bounds their total
# whatever the count. And only an authorized peer's session is
# kept: a peer that fails verification fails inside the handshake, before
# any session exists, and one the policy or expect refuses has its session
# removed (forget_session, called by the runner on every refusal), so a
# refused peer leaves nothing behind however often it comes back.

# The cipher list, session-id context and reason table are shared with the
# reference engine (proxy/tls/openssl_terms.py): one copy, so both engines
# configure OpenSSL alike and report the same HandshakeFailure.
cdef bytes _TLS12_CIPHERS = openssl_terms.TLS12_CIPHERS
cdef bytes _SESSION_ID_CONTEXT = openssl_terms.SESSION_ID_CONTEXT
cdef int _MAX_CACHED_SESSIONS = 1024  # session keys (upstreams) remembered
cdef int _SESSIONS_PER_KEY = 32       # unused sessions kept per key
cdef int _MAX_SERVER_SESSIONS = 8192
# Bytes of Certificate message a peer may send (OpenSSL's default: 100 KiB);
# shared with the reference engine (openssl_terms.MAX_CERT_LIST).
cdef long _MAX_CERT_LIST = openssl_terms.MAX_CERT_LIST
# Session-id context of a connection that must neither resume nor be resumed:
# no cached session (made under SESSION_ID_CONTEXT) matches it.
cdef bytes _NO_RESUMPTION_CONTEXT = openssl_terms.NO_RESUMPTION_CONTEXT
cdef int _APP_DATA = 0  # SSL ex_data index 0 is the "app data" slot

classify_tls_error = openssl_terms.classify_tls_error


cdef void _collect_error_detail(char* out, size_t size) noexcept nogil:
    """Drain this thread's OpenSSL error queue into out as "reason; reason" (NUL-terminated, truncated).

    GIL-free, so the relay thread reports TLS errors with the same text as
    the event loop's calls (_ssl_error_detail).
    """
    cdef unsigned long e = ERR_get_error()
    cdef const char* r
    cdef size_t used = 0
    cdef int n
    out[0] = 0
    while e != 0:
        if used + 1 < size:
            r = ERR_reason_error_string(e)
            if r != NULL:
                n = snprintf(out + used, size - used, "%s%s", b"; " if used else b"", r)
            else:
                n = snprintf(out + used, size - used, "%serror %#lx", b"; " if used else b"", e)
            if n > 0:
                used = min(used + <size_t>n, size - 1)
        e = ERR_get_error()


cdef str _ssl_error_detail():
    """Drain this thread's OpenSSL error queue into one line of reason strings."""
    cdef char buf[1024]
    _collect_error_detail(buf, sizeof(buf))
    return buf.decode("utf-8", "replace")


cdef object _tls_failure(int ssl_err, int saved_errno, str fallback):
    """The exception for a failed SSL call (TlsError, or OSError for a socket error)."""
    detail = _ssl_error_detail()
    if ssl_err == SSL_ERROR_ZERO_RETURN:
        return TlsError(HandshakeFailure.PEER_CLOSED, "peer sent close_notify")
    if ssl_err == SSL_ERROR_SYSCALL and not detail:
        if saved_errno == 0 or saved_errno == ECONNRESET or saved_errno == EPIPE:
            return TlsError(HandshakeFailure.PEER_CLOSED, "peer closed the connection")
        return OSError(saved_errno, os.strerror(saved_errno))
    detail = detail or fallback
    return TlsError(classify_tls_error(detail), detail)


# --- Contexts ---------------------------------------------------------------------


@cython.final
cdef class _Session:
    """Owns one client SSL_SESSION (freed with this object)."""

    cdef SSL_SESSION* sess

    def __dealloc__(self):
        if self.sess != NULL:
            SSL_SESSION_free(self.sess)


cdef struct _InboxEntry:
    char* key
    size_t key_len
    SSL_SESSION* sess
    _InboxEntry* next


cdef struct _SessionInbox:
    # Sessions handed over by the GIL-free new-session callback, newest first.
    pthread_mutex_t lock
    _InboxEntry* head


cdef struct _SessionTag:
    # What the new-session callback needs to know about a client connection,
    # reachable without the GIL (SSL ex_data slot _tag_index).
    char* key
    size_t key_len
    bint verified
    _SessionInbox* inbox


cdef int _tag_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL)


cdef void _free_inbox_entries(_InboxEntry* e) noexcept nogil:
    cdef _InboxEntry* nxt
    while e != NULL:
        nxt = e.next
        SSL_SESSION_free(e.sess)
        free(e.key)
        free(e)
        e = nxt


cdef int _load_identity(SSL_CTX* ctx, object material) except -1:
    """Our chain and key, from DER, into ctx."""
    cdef X509* x
    cdef EVP_PKEY* pkey
    cdef bytes key = bytes(material.key_der)
    cdef const unsigned char* p = <const unsigned char*>key
    chain = [bytes(d) for d in material.chain_der]
    if not chain:
        raise TlsError(HandshakeFailure.INTERNAL, "TLS material has no certificate chain")
    for i, der in enumerate(chain):
        try:
            x = _d2i_x509(der)
        except VerificationError:
            raise TlsError(HandshakeFailure.INTERNAL, f"our chain_der[{i}] is not a DER certificate") from None
        ok = SSL_CTX_use_certificate(ctx, x) if i == 0 else SSL_CTX_add1_chain_cert(ctx, x)
        X509_free(x)
        if ok != 1:
            raise TlsError(HandshakeFailure.INTERNAL, f"cannot use our chain_der[{i}]: {_ssl_error_detail()}")
    pkey = d2i_AutoPrivateKey(NULL, &p, len(key))
    if pkey == NULL:
        raise TlsError(HandshakeFailure.INTERNAL, f"our key is not a PKCS#8 DER key: {_ssl_error_detail()}")
    ok = SSL_CTX_use_PrivateKey(ctx, pkey)
    EVP_PKEY_free(pkey)
    if ok != 1 or SSL_CTX_check_private_key(ctx) != 1:
        raise TlsError(HandshakeFailure.INTERNAL, f"our key does not match our certificate: {_ssl_error_detail()}")
    return 0


cdef SSL_CTX* _new_ssl_ctx(object material, bint server) except NULL:
    cdef SSL_CTX* ctx = SSL_CTX_new(TLS_server_method() if server else TLS_client_method())
    if ctx == NULL:
        raise TlsError(HandshakeFailure.INTERNAL, _ssl_error_detail())
    try:
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE)
        # RELEASE_BUFFERS: an idle connection holds no 16 KiB record buffers
        # (haproxy does the same); read-ahead: one recv per record, not two.
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                         | SSL_MODE_RELEASE_BUFFERS)
        SSL_CTX_set_read_ahead(ctx, 1)
        SSL_CTX_set_max_cert_list(ctx, _MAX_CERT_LIST)
        if SSL_CTX_set_cipher_list(ctx, _TLS12_CIPHERS) != 1:
            raise TlsError(HandshakeFailure.INTERNAL, _ssl_error_detail())
        _load_identity(ctx, material)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL)
        SSL_CTX_set_cert_verify_callback(ctx, _cert_verify_cb, NULL)
        if server:
            _enable_alpn_selection(ctx)  # selects only for connections that called offer_alpn
            # Required to resume sessions that carried a client certificate.
            SSL_CTX_set_session_id_context(ctx, _SESSION_ID_CONTEXT, len(_SESSION_ID_CONTEXT))
            # Stateful sessions (see the top of this file), at most
            # _MAX_SERVER_SESSIONS of them; OpenSSL evicts the oldest.
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET)
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER)
            SSL_CTX_sess_set_cache_size(ctx, _MAX_SERVER_SESSIONS)
            # One ticket per handshake: the client keeps only the newest
            # session per key, so a second ticket would be minted for nothing.
            SSL_CTX_set_num_tickets(ctx, 1)
        else:
            # Sessions live in ClientContext._sessions, keyed by the caller.
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE)
            SSL_CTX_sess_set_new_cb(ctx, _new_session_cb)
            # Offer TLS 1.3 post-handshake auth: the server re-authenticates us before our SVID expires.
            SSL_CTX_set_post_handshake_auth(ctx, 1)
    except BaseException:
        SSL_CTX_free(ctx)
        raise
    return ctx


cdef class _Context:
    """One SSL_CTX and the per-trust-domain stores, for one identity snapshot."""

    cdef SSL_CTX* ctx
    cdef dict stores
    cdef readonly object material
    cdef readonly long generation

    def __cinit__(self, material, *args, **kwargs):
        self.material = material
        self.generation = material.generation
        try:
            self.stores = _build_stores(material.bundles)
        except VerificationError as exc:
            # Bundles are validated when they arrive; one that is not DER here is our bug, not the peer's.
            raise TlsError(HandshakeFailure.INTERNAL, f"a trust bundle holds a non-certificate: {exc.detail}") from None

    def __dealloc__(self):
        if self.ctx != NULL:
            SSL_CTX_free(self.ctx)


@cython.final
cdef class ServerContext(_Context):
    """Accepts TLS from peers that present a valid X.509-SVID of a known trust domain."""

    cdef _CacheBudget* budget

    def __init__(self, material, session_cache_bytes=None):
        self.ctx = _new_ssl_ctx(material, True)
        limit = _SERVER_CACHE_BYTES if session_cache_bytes is None else session_cache_bytes
        self.budget = _install_cache_budget(self.ctx, limit)

    def __dealloc__(self):
        # The context first: freeing it empties its cache through the remove
        # callback, which still needs the budget.
        if self.ctx != NULL:
            SSL_CTX_free(self.ctx)
            self.ctx = NULL
        _free_cache_budget(self.budget)

    @property
    def cached_session_bytes(self):
        """Estimated bytes the cached sessions hold (at most the budget)."""
        return _cache_budget_used(self.budget)

    def new_connection(self, int fd, bint resumable=True):
        """A server-side connection on the connected, non-blocking fd (not owned).

        ``resumable=False`` (a listener with session resumption off): no
        session is resumed on it and none it makes is kept.
        """
        conn = TlsConnection(self, fd, True, None)
        if not resumable:
            conn.no_resumption()
        return conn

    @property
    def cached_sessions(self):
        """Sessions in this context's server cache now (tests, diagnostics)."""
        return SSL_CTX_sess_number(self.ctx)


@cython.final
cdef class ClientContext(_Context):
    """Originates TLS with our SVID and verifies the server's SVID; caches sessions."""

    cdef dict sessions
    cdef _SessionInbox* inbox
    cdef ClientIdentity identity

    def __init__(self, material, ClientIdentity identity=None):
        self.ctx = _new_ssl_ctx(material, False)
        if identity is not None:
            # Answer every certificate request with the newest identity (_fastpath_reauth.pxi).
            self.identity = identity  # the cell lives as long as any context using it
            SSL_CTX_set_cert_cb(self.ctx, _client_cert_cb, <void*>identity.cell)
        self.sessions = {}
        self.inbox = <_SessionInbox*>calloc(1, sizeof(_SessionInbox))
        if self.inbox == NULL:
            raise MemoryError()
        pthread_mutex_init(&self.inbox.lock, NULL)

    def __dealloc__(self):
        if self.inbox != NULL:
            _free_inbox_entries(self.inbox.head)
            pthread_mutex_destroy(&self.inbox.lock)
            free(self.inbox)

    def _publish_into(self, ClientIdentity identity not None):
        identity.set_ctx(self.ctx)

    def new_connection(self, int fd, session_key=None, bint offer_session=True):
        """A client connection; offers the session cached under session_key, if any.

        ``offer_session=False`` makes a full handshake (a retry after the
        upstream refused a resumption, or while it is backed off); the
        sessions the connection brings are still cached under the key.
        """
        conn = TlsConnection(self, fd, False, session_key)
        cdef _Session s
        if session_key is not None:
            self.collect_sessions()
            unused = self.sessions.get(session_key) if offer_session else None
            if unused:
                s = unused.pop()  # the newest; SSL_set_session holds its own reference
                SSL_set_session(conn.ssl, s.sess)
                conn.session_offered = True
            conn.tag_for_sessions(self.inbox)
        return conn

    def drop_sessions(self, session_key):
        """Forget every session cached under session_key (the upstream refused one of them)."""
        self.collect_sessions()
        self.sessions.pop(session_key, None)

    def cached_sessions(self, session_key):
        """How many unused sessions are cached under session_key (tests, diagnostics)."""
        self.collect_sessions()
        return len(self.sessions.get(session_key, ()))

    cdef int collect_sessions(self) except -1:
        """Move what the callback left in the inbox into the cache (oldest first, so the newest wins)."""
        cdef _InboxEntry* e
        cdef _InboxEntry* nxt
        cdef _Session s
        with nogil:
            pthread_mutex_lock(&self.inbox.lock)
            e = self.inbox.head
            self.inbox.head = NULL
            pthread_mutex_unlock(&self.inbox.lock)
        arrived = []
        while e != NULL:
            nxt = e.next
            s = _Session.__new__(_Session)
            s.sess = e.sess  # s owns it from here, even if decoding the key fails
            arrived.append((e.key[:e.key_len].decode("utf-8", "surrogateescape"), s))
            free(e.key)
            free(e)
            e = nxt
        for key, s in reversed(arrived):
            self.store_session(key, s)
        return 0

    cdef void store_session(self, object key, _Session s):
        unused = self.sessions.pop(key, None)  # re-inserted: the dict's order is by last use
        if unused is None:
            unused = []
            if len(self.sessions) >= _MAX_CACHED_SESSIONS:
                del self.sessions[next(iter(self.sessions))]  # the key used longest ago
        unused.append(s)
        if len(unused) > _SESSIONS_PER_KEY:
            del unused[0]  # the oldest
        self.sessions[key] = unused


cdef int _new_session_cb(SSL* ssl, SSL_SESSION* sess) noexcept nogil:
    # Called when the server's session (TLS 1.3: its ticket) arrives, which
    # is usually in the middle of a relay read on the relay thread: no
    # Python here. Returning 1 takes ownership of sess.
    cdef _SessionTag* tag = <_SessionTag*>SSL_get_ex_data(ssl, _tag_index)
    cdef _InboxEntry* e
    if tag == NULL or not tag.verified:
        return 0
    e = <_InboxEntry*>malloc(sizeof(_InboxEntry))
    if e == NULL:
        return 0
    e.key = <char*>malloc(tag.key_len if tag.key_len > 0 else 1)
    if e.key == NULL:
        free(e)
        return 0
    memcpy(e.key, tag.key, tag.key_len)
    e.key_len = tag.key_len
    e.sess = sess
    pthread_mutex_lock(&tag.inbox.lock)
    e.next = tag.inbox.head
    tag.inbox.head = e
    pthread_mutex_unlock(&tag.inbox.lock)
    return 1
