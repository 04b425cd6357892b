# The server session cache's byte budget (issue 11.1). Included by _fastpath.pyx.
#
# OpenSSL bounds its server cache by count only, and a session holds the
# peer's whole parsed chain, so the count alone bounds nothing in bytes.
# The new-session callback weighs each session as it enters the cache
# (its peer chain's DER size times _PARSED_FACTOR, what a parsed
# certificate costs in memory, plus a fixed overhead) and removes it again
# at once when the cache would exceed its budget; the remove callback
# (eviction, expiry, forget_session, the context's end) gives the weight
# back. The remove callback can run on the relay thread (OpenSSL retires a
# session when a connection dies there), so the tally is under a mutex and
# no Python runs in either callback.

# Memory a server context's cached sessions may take, in estimated bytes.
cdef long _SERVER_CACHE_BYTES = 64 * 1024 * 1024
# A parsed X509 costs about this many times its DER size (measured: 88 KB of
# DER padding kept 230 KB per session); and a session's own overhead.
cdef long _PARSED_FACTOR = 3
cdef long _SESSION_OVERHEAD = 2048


cdef struct _CacheBudget:
    pthread_mutex_t lock
    long used
    long limit


cdef int _budget_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL)
cdef int _weight_index = SSL_SESSION_get_ex_new_index(0, NULL, NULL, NULL, NULL)


cdef long _session_weight(SSL* ssl) noexcept nogil:
    """What a new server session will hold: the peer's chain, parsed, and the session itself."""
    cdef long der = 0
    cdef int i
    cdef stack_st_X509* chain = SSL_get_peer_cert_chain(ssl)
    cdef X509* leaf = SSL_get0_peer_certificate(ssl)
    if leaf != NULL:
        der += i2d_X509(leaf, NULL)
    if chain != NULL:
        for i in range(sk_X509_num(chain)):
            der += i2d_X509(sk_X509_value(chain, i), NULL)
    return der * _PARSED_FACTOR + _SESSION_OVERHEAD


cdef int _budget_new_session_cb(SSL* ssl, SSL_SESSION* sess) noexcept nogil:
    # Called after OpenSSL added sess to the server cache; we keep no reference (return 0).
    cdef SSL_CTX* ctx = SSL_get_SSL_CTX(ssl)
    cdef _CacheBudget* budget = <_CacheBudget*>SSL_CTX_get_ex_data(ctx, _budget_index)
    cdef long weight
    cdef bint fits
    if budget == NULL:
        return 0
    # A resumed TLS 1.3 connection's new session is a copy of the old one, ex_data
    # (its weight) included: clear it, so the tally counts this session only once.
    SSL_SESSION_set_ex_data(sess, _weight_index, NULL)
    weight = _session_weight(ssl)
    pthread_mutex_lock(&budget.lock)
    fits = budget.used + weight <= budget.limit
    if fits:
        budget.used += weight
    pthread_mutex_unlock(&budget.lock)
    if fits:
        SSL_SESSION_set_ex_data(sess, _weight_index, <void*>weight)
    else:
        SSL_CTX_remove_session(ctx, sess)  # over budget: this one is not kept (weight 0: nothing to give back)
    return 0


cdef void _budget_remove_session_cb(SSL_CTX* ctx, SSL_SESSION* sess) noexcept nogil:
    cdef _CacheBudget* budget = <_CacheBudget*>SSL_CTX_get_ex_data(ctx, _budget_index)
    cdef long weight = <long>SSL_SESSION_get_ex_data(sess, _weight_index)
    if budget == NULL or weight == 0:
        return
    SSL_SESSION_set_ex_data(sess, _weight_index, NULL)
    pthread_mutex_lock(&budget.lock)
    budget.used -= weight
    pthread_mutex_unlock(&budget.lock)


cdef _CacheBudget* _install_cache_budget(SSL_CTX* ctx, long limit) except NULL:
    """Give a server context a byte budget (freed by _free_cache_budget after SSL_CTX_free)."""
    cdef _CacheBudget* budget = <_CacheBudget*>calloc(1, sizeof(_CacheBudget))
    if budget == NULL:
        raise MemoryError()
    pthread_mutex_init(&budget.lock, NULL)
    budget.limit = limit
    SSL_CTX_set_ex_data(ctx, _budget_index, <void*>budget)
    SSL_CTX_sess_set_new_cb(ctx, _budget_new_session_cb)
    SSL_CTX_sess_set_remove_cb(ctx, _budget_remove_session_cb)
    return budget


cdef long _cache_budget_used(_CacheBudget* budget) noexcept nogil:
    cdef long used
    pthread_mutex_lock(&budget.lock)
    used = budget.used
    pthread_mutex_unlock(&budget.lock)
    return used


cdef void _free_cache_budget(_CacheBudget* budget) noexcept nogil:
    if budget != NULL:
        pthread_mutex_destroy(&budget.lock)
        free(budget)
