# The TLS facts the HTTP layer needs (issue 13), kept out of the handshake
# code: ALPN (h2 / http/1.1 between sidecars) and the peer leaf's DER (the
# Hash of x-forwarded-client-cert). Twins: proxy/tls/engine_py_tls.py's
# offer_alpn, selected_alpn, peer_leaf_der; contract in proxy/tls/engine.py.
#
# The server side selects in a context-wide callback (OpenSSL has no
# per-SSL one), reading what this connection accepts from an ex_data slot
# that holds a small code, not a pointer: nothing to free, nothing that can
# dangle. Only connections that called offer_alpn select anything; the
# callback runs only when a client offered ALPN, so a TCP listener's
# handshakes are unchanged.

cdef extern from "openssl/ssl.h" nogil:
    ctypedef int (*_alpn_select_cb_t)(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                                      const unsigned char* inp, unsigned int inlen, void* arg)
    void SSL_CTX_set_alpn_select_cb(SSL_CTX* ctx, _alpn_select_cb_t cb, void* arg)
    int SSL_set_alpn_protos(SSL* ssl, const unsigned char* protos, unsigned int protos_len)
    void SSL_get0_alpn_selected(const SSL* ssl, const unsigned char** data, unsigned int* len)
    int SSL_select_next_proto(unsigned char** out, unsigned char* outlen, const unsigned char* server,
                              unsigned int server_len, const unsigned char* client, unsigned int client_len)
    int SSL_TLSEXT_ERR_OK
    int SSL_TLSEXT_ERR_NOACK
    int OPENSSL_NPN_NEGOTIATED

cdef extern from "openssl/x509.h" nogil:
    int i2d_X509(const X509* a, unsigned char** out)

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_free(void* p)

cdef int _alpn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL)
# Server preference lists in ALPN wire format, by code (the ex_data value).
cdef const char* _ALPN_WIRE_1 = b"\x02h2\x08http/1.1"
cdef const char* _ALPN_WIRE_2 = b"\x08http/1.1"
cdef const char* _ALPN_WIRE_3 = b"\x02h2"
_ALPN_CODES = {("h2", "http/1.1"): 1, ("http/1.1",): 2, ("h2",): 3}


cdef int _alpn_select(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                      const unsigned char* inp, unsigned int inlen, void* arg) noexcept nogil:
    cdef size_t code = <size_t>SSL_get_ex_data(ssl, _alpn_index)
    cdef const unsigned char* wire
    cdef unsigned int n
    if code == 1:
        wire, n = <const unsigned char*>_ALPN_WIRE_1, 12
    elif code == 2:
        wire, n = <const unsigned char*>_ALPN_WIRE_2, 9
    elif code == 3:
        wire, n = <const unsigned char*>_ALPN_WIRE_3, 3
    else:
        return SSL_TLSEXT_ERR_NOACK
    if SSL_select_next_proto(<unsigned char**>out, outlen, wire, n, inp, inlen) != OPENSSL_NPN_NEGOTIATED:
        return SSL_TLSEXT_ERR_NOACK
    return SSL_TLSEXT_ERR_OK


cdef void _enable_alpn_selection(SSL_CTX* ctx) noexcept:
    SSL_CTX_set_alpn_select_cb(ctx, _alpn_select, NULL)


def offer_alpn(TlsConnection conn not None, protocols):
    """Before the handshake: offer (client) or accept (server, in this preference) these ALPN IDs."""
    cdef SSL* ssl = conn.live()
    key = tuple(protocols)
    if conn.server:
        code = _ALPN_CODES.get(key)
        if code is None:
            raise ValueError(f"unsupported ALPN list {key!r}; one of {sorted(_ALPN_CODES)}")
        SSL_set_ex_data(ssl, _alpn_index, <void*><size_t>code)
        return
    wire = b"".join(bytes([len(p)]) + p.encode("ascii") for p in key)
    if SSL_set_alpn_protos(ssl, <const unsigned char*>wire, len(wire)) != 0:
        raise TlsError(HandshakeFailure.INTERNAL, f"cannot offer ALPN {key!r}: {_ssl_error_detail()}")


def selected_alpn(TlsConnection conn not None):
    """The ALPN protocol the handshake agreed on, or "" when none."""
    cdef const unsigned char* data = NULL
    cdef unsigned int n = 0
    SSL_get0_alpn_selected(conn.live(), &data, &n)
    return (<const char*>data)[:n].decode("ascii", "replace") if n else ""


def peer_leaf_der(TlsConnection conn not None):
    """The verified peer's leaf certificate, DER (b"" before the handshake completed)."""
    cdef X509* leaf = SSL_get0_peer_certificate(conn.live())
    cdef unsigned char* buf = NULL
    cdef int n
    if leaf == NULL:
        return b""
    n = i2d_X509(leaf, &buf)
    if n <= 0:
        raise TlsError(HandshakeFailure.INTERNAL, f"cannot encode the peer certificate: {_ssl_error_detail()}")
    try:
        return (<char*>buf)[:n]
    finally:
        OPENSSL_free(buf)
