# cython: language_level=3
# The slice of OpenSSL (>= 3.0) that proxy/_fastpath.pyx drives, grouped by
# the flow that uses it (uvloop's includes/uv.pxd style). Many of these are
# macros over SSL_CTX_ctrl in the C headers; Cython only emits the call
# text, so declaring them as functions is enough.

from libc.stdint cimport uint32_t, uint64_t
from libc.time cimport time_t, tm


cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_get_error()
    unsigned long ERR_peek_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char* buf, size_t len)
    int ERR_GET_REASON(unsigned long e)
    const char* ERR_reason_error_string(unsigned long e)


cdef extern from "openssl/x509.h" nogil:
    ctypedef struct X509
    ctypedef struct X509_STORE
    ctypedef struct X509_STORE_CTX
    ctypedef struct ASN1_TIME
    ctypedef struct ASN1_STRING
    ctypedef struct EVP_PKEY
    cdef struct stack_st_X509
    ctypedef void (*X509_freefunc)(X509*)

    # Certificates from DER
    X509* d2i_X509(X509** px, const unsigned char** inp, long length)
    int i2d_X509(const X509* x, unsigned char** out)
    void X509_free(X509* x)
    int X509_up_ref(X509* x)
    EVP_PKEY* d2i_AutoPrivateKey(EVP_PKEY** a, const unsigned char** pp, long length)
    void EVP_PKEY_free(EVP_PKEY* pkey)

    # Certificate fields the SPIFFE checks read
    void* X509_get_ext_d2i(const X509* x, int nid, int* crit, int* idx)
    const ASN1_TIME* X509_get0_notAfter(const X509* x)
    const ASN1_TIME* X509_get0_notBefore(const X509* x)
    int ASN1_TIME_to_tm(const ASN1_TIME* s, tm* t)
    int ASN1_STRING_length(const ASN1_STRING* x)
    const unsigned char* ASN1_STRING_get0_data(const ASN1_STRING* x)

    # Stacks of certificates (the untrusted intermediates)
    stack_st_X509* sk_X509_new_null()
    int sk_X509_num(const stack_st_X509* sk)
    X509* sk_X509_value(const stack_st_X509* sk, int i)
    int sk_X509_push(stack_st_X509* sk, X509* x)
    void sk_X509_pop_free(stack_st_X509* sk, X509_freefunc f)

    # Trust stores and RFC 5280 path validation
    X509_STORE* X509_STORE_new()
    void X509_STORE_free(X509_STORE* s)
    int X509_STORE_add_cert(X509_STORE* s, X509* x)
    X509_STORE_CTX* X509_STORE_CTX_new()
    void X509_STORE_CTX_free(X509_STORE_CTX* c)
    int X509_STORE_CTX_init(X509_STORE_CTX* c, X509_STORE* s, X509* leaf, stack_st_X509* untrusted)
    void X509_STORE_CTX_set_time(X509_STORE_CTX* c, unsigned long flags, time_t t)
    void X509_STORE_CTX_set_flags(X509_STORE_CTX* c, unsigned long flags)
    int X509_STORE_CTX_set_purpose(X509_STORE_CTX* c, int purpose)
    X509* X509_STORE_CTX_get0_cert(const X509_STORE_CTX* c)
    stack_st_X509* X509_STORE_CTX_get0_untrusted(const X509_STORE_CTX* c)
    int X509_STORE_CTX_get_error(const X509_STORE_CTX* c)
    int X509_STORE_CTX_get_error_depth(const X509_STORE_CTX* c)
    void X509_STORE_CTX_set_error(X509_STORE_CTX* c, int s)
    void* X509_STORE_CTX_get_ex_data(const X509_STORE_CTX* c, int idx)
    int X509_verify_cert(X509_STORE_CTX* c)
    const char* X509_verify_cert_error_string(long n)

    int X509_V_OK
    int X509_V_ERR_CERT_HAS_EXPIRED
    int X509_V_ERR_CERT_NOT_YET_VALID
    int X509_V_ERR_CERT_UNTRUSTED
    int X509_V_ERR_CERT_REJECTED
    int X509_V_ERR_APPLICATION_VERIFICATION
    int X509_PURPOSE_ANY
    unsigned long X509_V_FLAG_PARTIAL_CHAIN


cdef extern from "openssl/x509v3.h" nogil:
    ctypedef struct GENERAL_NAME
    ctypedef struct GENERAL_NAMES
    int sk_GENERAL_NAME_num(const GENERAL_NAMES* sk)
    GENERAL_NAME* sk_GENERAL_NAME_value(const GENERAL_NAMES* sk, int i)
    void GENERAL_NAMES_free(GENERAL_NAMES* a)
    uint32_t X509_get_extension_flags(X509* x)
    uint32_t X509_get_key_usage(X509* x)
    uint32_t X509_get_extended_key_usage(X509* x)

    int NID_subject_alt_name
    uint32_t EXFLAG_CA
    uint32_t EXFLAG_KUSAGE
    uint32_t EXFLAG_XKUSAGE
    uint32_t EXFLAG_INVALID
    uint32_t KU_DIGITAL_SIGNATURE
    uint32_t KU_KEY_CERT_SIGN
    uint32_t KU_CRL_SIGN
    uint32_t XKU_SSL_SERVER
    uint32_t XKU_SSL_CLIENT


cdef extern from "openssl/x509.h" nogil:
    # Key and signature strength (proxy/spiffe/strength.py's policy)
    ctypedef struct X509_PUBKEY
    ctypedef struct X509_ALGOR
    ctypedef struct ASN1_OBJECT
    X509_PUBKEY* X509_get_X509_PUBKEY(const X509* x)
    int X509_PUBKEY_get0_param(ASN1_OBJECT** ppkalg, const unsigned char** pk, int* ppklen,
                               X509_ALGOR** pa, const X509_PUBKEY* pub)
    void X509_ALGOR_get0(const ASN1_OBJECT** paobj, int* pptype, const void** ppval, const X509_ALGOR* algor)
    EVP_PKEY* X509_get0_pubkey(const X509* x)
    int EVP_PKEY_get_bits(const EVP_PKEY* pkey)
    int X509_get_signature_info(X509* x, int* mdnid, int* pknid, int* secbits, uint32_t* flags)
    int X509_get_signature_nid(const X509* x)
    int X509_cmp(const X509* a, const X509* b)
    int OBJ_obj2nid(const ASN1_OBJECT* o)
    const char* OBJ_nid2sn(int n)
    int V_ASN1_OBJECT
    int NID_undef
    int NID_rsaEncryption
    int NID_rsassaPss
    int NID_X9_62_id_ecPublicKey
    int NID_X9_62_prime256v1
    int NID_secp384r1
    int NID_secp521r1
    int NID_ED25519
    int NID_sha256
    int NID_sha384
    int NID_sha512


cdef extern from *:
    # GENERAL_NAME's union is awkward to declare in Cython; one accessor is not.
    """
    #include <openssl/x509v3.h>
    static const ASN1_STRING *spx_general_name_uri(const GENERAL_NAME *gn) {
        return gn->type == GEN_URI ? (const ASN1_STRING *)gn->d.uniformResourceIdentifier : NULL;
    }
    """
    const ASN1_STRING* spx_general_name_uri(const GENERAL_NAME* gn) nogil


cdef extern from "openssl/ssl.h" nogil:
    ctypedef struct SSL_METHOD
    ctypedef struct SSL_CTX
    ctypedef struct SSL
    ctypedef struct SSL_SESSION
    ctypedef struct SSL_CIPHER
    ctypedef int (*cert_verify_cb)(X509_STORE_CTX*, void*) noexcept
    ctypedef int (*new_session_cb)(SSL*, SSL_SESSION*) noexcept
    ctypedef void (*remove_session_cb)(SSL_CTX*, SSL_SESSION*) noexcept

    # Contexts: built once per identity snapshot, never mutated after
    const SSL_METHOD* TLS_server_method()
    const SSL_METHOD* TLS_client_method()
    SSL_CTX* SSL_CTX_new(const SSL_METHOD* m)
    void SSL_CTX_free(SSL_CTX* ctx)
    int SSL_CTX_set_min_proto_version(SSL_CTX* ctx, int version)
    int SSL_CTX_set_max_proto_version(SSL_CTX* ctx, int version)
    uint64_t SSL_CTX_set_options(SSL_CTX* ctx, uint64_t op)
    long SSL_CTX_set_mode(SSL_CTX* ctx, long mode)
    int SSL_CTX_set_cipher_list(SSL_CTX* ctx, const char* s)
    int SSL_CTX_use_certificate(SSL_CTX* ctx, X509* x)
    long SSL_CTX_add1_chain_cert(SSL_CTX* ctx, X509* x)
    int SSL_CTX_use_PrivateKey(SSL_CTX* ctx, EVP_PKEY* pkey)
    int SSL_CTX_check_private_key(const SSL_CTX* ctx)
    void SSL_CTX_set_verify(SSL_CTX* ctx, int mode, void* cb)
    void SSL_CTX_set_cert_verify_callback(SSL_CTX* ctx, cert_verify_cb cb, void* arg)
    int SSL_CTX_set_session_id_context(SSL_CTX* ctx, const unsigned char* sid, unsigned int len)
    long SSL_CTX_set_session_cache_mode(SSL_CTX* ctx, long mode)
    void SSL_CTX_sess_set_new_cb(SSL_CTX* ctx, new_session_cb cb)
    int SSL_CTX_set_num_tickets(SSL_CTX* ctx, size_t n)
    long SSL_CTX_sess_set_cache_size(SSL_CTX* ctx, long t)
    long SSL_CTX_set_max_cert_list(SSL_CTX* ctx, long m)
    int SSL_CTX_remove_session(SSL_CTX* ctx, SSL_SESSION* s)
    long SSL_CTX_sess_number(SSL_CTX* ctx)
    void SSL_CTX_sess_set_remove_cb(SSL_CTX* ctx, remove_session_cb cb)
    void SSL_CTX_flush_sessions(SSL_CTX* ctx, long tm)
    int SSL_CTX_get_ex_new_index(long argl, void* argp, void* new_func, void* dup_func, void* free_func)
    int SSL_CTX_set_ex_data(SSL_CTX* ctx, int idx, void* data)
    void* SSL_CTX_get_ex_data(const SSL_CTX* ctx, int idx)
    int SSL_SESSION_get_ex_new_index(long argl, void* argp, void* new_func, void* dup_func, void* free_func)
    int SSL_SESSION_set_ex_data(SSL_SESSION* s, int idx, void* data)
    void* SSL_SESSION_get_ex_data(const SSL_SESSION* s, int idx)
    stack_st_X509* SSL_get_peer_cert_chain(const SSL* s)
    void SSL_CTX_set_read_ahead(SSL_CTX* ctx, int yes)
    int SSL_get_ex_new_index(long argl, void* argp, void* new_func, void* dup_func, void* free_func)

    int TLS1_2_VERSION
    int TLS1_3_VERSION
    uint64_t SSL_OP_NO_RENEGOTIATION
    uint64_t SSL_OP_NO_COMPRESSION
    uint64_t SSL_OP_CIPHER_SERVER_PREFERENCE
    uint64_t SSL_OP_NO_TICKET
    long SSL_MODE_ENABLE_PARTIAL_WRITE
    long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
    long SSL_MODE_RELEASE_BUFFERS
    int SSL_VERIFY_PEER
    int SSL_VERIFY_FAIL_IF_NO_PEER_CERT
    long SSL_SESS_CACHE_CLIENT
    long SSL_SESS_CACHE_NO_INTERNAL_STORE
    long SSL_SESS_CACHE_SERVER

    # One connection: handshake on the fd, peer facts, shutdown
    SSL* SSL_new(SSL_CTX* ctx)
    void SSL_free(SSL* s)
    int SSL_set_fd(SSL* s, int fd)
    void SSL_set_accept_state(SSL* s)
    void SSL_set_connect_state(SSL* s)
    int SSL_set_ex_data(SSL* s, int idx, void* data)
    void* SSL_get_ex_data(const SSL* s, int idx)
    int SSL_get_ex_data_X509_STORE_CTX_idx()
    int SSL_do_handshake(SSL* s)
    int SSL_get_error(const SSL* s, int ret)
    int SSL_shutdown(SSL* s)
    X509* SSL_get0_peer_certificate(const SSL* s)
    const char* SSL_get_version(const SSL* s)
    const SSL_CIPHER* SSL_get_current_cipher(const SSL* s)
    const char* SSL_CIPHER_get_name(const SSL_CIPHER* c)
    int SSL_session_reused(const SSL* s)
    int SSL_set_session(SSL* s, SSL_SESSION* session)
    SSL_SESSION* SSL_get_session(const SSL* s)
    SSL_CTX* SSL_get_SSL_CTX(const SSL* s)
    int SSL_set_num_tickets(SSL* s, size_t n)
    int SSL_set_session_id_context(SSL* s, const unsigned char* sid, unsigned int len)
    void SSL_SESSION_free(SSL_SESSION* s)
    int SSL_SESSION_is_resumable(const SSL_SESSION* s)

    int SSL_ERROR_NONE
    int SSL_ERROR_SSL
    int SSL_ERROR_WANT_READ
    int SSL_ERROR_WANT_WRITE
    int SSL_ERROR_SYSCALL
    int SSL_ERROR_ZERO_RETURN
    int SSL_R_UNEXPECTED_EOF_WHILE_READING

    # The relay pump
    int SSL_read_ex(SSL* s, void* buf, size_t num, size_t* readbytes)
    int SSL_write_ex(SSL* s, const void* buf, size_t num, size_t* written)
    int SSL_pending(const SSL* s)

    # Which OpenSSL this module was built against and runs on
    const char* OpenSSL_version(int t)
    int OPENSSL_VERSION


cdef extern from "openssl/ssl.h" nogil:
    # Re-authentication of a live peer: TLS 1.3 post-handshake authentication
    # (RFC 8446 4.6.2), and the client's newest SVID for it (issue 11.2)
    ctypedef void (*ssl_info_cb)(const SSL*, int, int) noexcept
    ctypedef int (*ssl_cert_cb)(SSL*, void*) noexcept
    int SSL_verify_client_post_handshake(SSL* s)
    void SSL_CTX_set_post_handshake_auth(SSL_CTX* ctx, int val)
    void SSL_set_info_callback(SSL* s, ssl_info_cb cb)
    int SSL_get_state(const SSL* s)
    int SSL_version(const SSL* s)
    void SSL_CTX_set_cert_cb(SSL_CTX* ctx, ssl_cert_cb cb, void* arg)
    int SSL_CTX_up_ref(SSL_CTX* ctx)
    X509* SSL_CTX_get0_certificate(const SSL_CTX* ctx)
    EVP_PKEY* SSL_CTX_get0_privatekey(const SSL_CTX* ctx)
    long SSL_CTX_get0_chain_certs(SSL_CTX* ctx, stack_st_X509** chain)
    int SSL_use_certificate(SSL* s, X509* x)
    int SSL_use_PrivateKey(SSL* s, EVP_PKEY* pkey)
    long SSL_set1_chain(SSL* s, stack_st_X509* chain)
    SSL_CTX* SSL_get_SSL_CTX(const SSL* s)
    int SSL_CB_ACCEPT_LOOP
    int TLS_ST_SR_CERT
    int TLS_ST_SR_FINISHED
