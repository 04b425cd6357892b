# SPIFFE peer verification in C: the strict SPIFFE ID parse, the leaf rules,
# and RFC 5280 path validation against one trust domain's store.
# Included by _fastpath.pyx. Each check is the twin of proxy/spiffe/ and
# runs in the order fixed by the contract in proxy/tls/engine.py, so both
# engines report the same first failure (parity-tested).

# --- Strict SPIFFE ID parse (twin of proxy.spiffe.id) ----------------------

cdef enum SpiffeRule:
    RULE_OK = 0
    RULE_EMPTY
    RULE_TOO_LONG
    RULE_BAD_SCHEME
    RULE_TD_EMPTY
    RULE_TD_TOO_LONG
    RULE_TD_CHARS
    RULE_TD_PORT
    RULE_TD_USERINFO
    RULE_TD_PERCENT
    RULE_QUERY
    RULE_FRAGMENT
    RULE_PATH_EMPTY_SEGMENT
    RULE_PATH_TRAILING_SLASH
    RULE_PATH_DOT_SEGMENT
    RULE_PATH_PERCENT
    RULE_PATH_CHARS

# Indexed by SpiffeRule; the texts are those of proxy.spiffe.id (parity-tested).
_RULE_TEXT = (
    "",
    "SPIFFE ID cannot be empty",
    "SPIFFE ID must be at most 2048 bytes",
    "scheme is missing or invalid: it must be exactly 'spiffe://' (lowercase)",
    "trust domain is missing",
    "trust domain must be at most 255 bytes",
    "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
    "trust domain cannot contain a port",
    "trust domain cannot contain userinfo",
    "trust domain cannot be percent-encoded",
    "SPIFFE ID cannot contain a query",
    "SPIFFE ID cannot contain a fragment",
    "path cannot contain empty segments",
    "path cannot have a trailing slash",
    "path cannot contain dot segments",
    "path cannot be percent-encoded",
    "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
)

cdef enum:
    SCHEME_LEN = 9  # len("spiffe://")
    MAX_ID_BYTES = 2048
    MAX_TD_BYTES = 255


cdef inline bint _td_char(unsigned char c) noexcept nogil:
    return (c >= 97 and c <= 122) or (c >= 48 and c <= 57) or c == 46 or c == 95 or c == 45


cdef inline bint _path_char(unsigned char c) noexcept nogil:
    return _td_char(c) or (c >= 65 and c <= 90)


cdef inline int _td_char_rule(unsigned char c) noexcept nogil:
    if c == 58:  # ':'
        return RULE_TD_PORT
    if c == 64:  # '@'
        return RULE_TD_USERINFO
    if c == 37:  # '%'
        return RULE_TD_PERCENT
    if c == 63:  # '?'
        return RULE_QUERY
    if c == 35:  # '#'
        return RULE_FRAGMENT
    return RULE_TD_CHARS


cdef inline int _path_char_rule(unsigned char c) noexcept nogil:
    if c == 37:
        return RULE_PATH_PERCENT
    if c == 63:
        return RULE_QUERY
    if c == 35:
        return RULE_FRAGMENT
    return RULE_PATH_CHARS


cdef int _parse_spiffe(const unsigned char* s, size_t n, size_t* td_end) noexcept nogil:
    """Return the first SpiffeRule that UTF-8 bytes s[:n] break (RULE_OK if none).

    On success td_end is the index of the end of the trust domain (the path
    is s[td_end:n]). Non-ASCII bytes fall in no allowed set, so they break
    the same rule their character breaks in the str-based core.
    """
    cdef size_t i = SCHEME_LEN, j, seg
    if n == 0:
        return RULE_EMPTY
    if n > MAX_ID_BYTES:
        return RULE_TOO_LONG
    if n < SCHEME_LEN or memcmp(s, b"spiffe://", SCHEME_LEN) != 0:
        return RULE_BAD_SCHEME
    while i < n and s[i] != 47:  # '/'
        if not _td_char(s[i]):
            return _td_char_rule(s[i])
        i += 1
    if i == SCHEME_LEN:
        return RULE_TD_EMPTY
    if i - SCHEME_LEN > MAX_TD_BYTES:
        return RULE_TD_TOO_LONG
    td_end[0] = i
    while i < n:  # s[i] == '/': one segment per turn
        seg = i + 1
        j = seg
        while j < n and s[j] != 47:
            j += 1
        if j == seg:
            return RULE_PATH_TRAILING_SLASH if j == n else RULE_PATH_EMPTY_SEGMENT
        for i in range(seg, j):
            if not _path_char(s[i]):
                return _path_char_rule(s[i])
        if s[seg] == 46 and (j - seg == 1 or (j - seg == 2 and s[seg + 1] == 46)):
            return RULE_PATH_DOT_SEGMENT
        i = j
    return RULE_OK


cdef tuple _split_spiffe_id(str value):
    """(trust domain, path) of value, or raise InvalidSpiffeIdError naming the rule."""
    cdef bytes raw = value.encode("utf-8", "surrogatepass")
    cdef size_t td_end = 0
    cdef int rule = _parse_spiffe(<const unsigned char*>raw, len(raw), &td_end)
    if rule != RULE_OK:
        raise InvalidSpiffeIdError(value, _RULE_TEXT[rule])
    return raw[SCHEME_LEN:td_end].decode("ascii"), raw[td_end:].decode("ascii")


# --- Certificates: DER in, facts out -------------------------------------------------


cdef X509* _d2i_x509(bytes der) except NULL:
    """Parse one whole DER certificate (trailing bytes are an error too)."""
    cdef const unsigned char* p = <const unsigned char*>der
    cdef const unsigned char* start = p
    cdef X509* x = d2i_X509(NULL, &p, len(der))
    if x == NULL or p - start != len(der):
        ERR_clear_error()
        if x != NULL:
            X509_free(x)
        raise VerificationError(VerifyFailure.BAD_CERTIFICATE, "not a DER X.509 certificate")
    return x


cdef double _asn1_time_unix(const ASN1_TIME* t) except? -1:
    cdef tm parts
    if t == NULL or ASN1_TIME_to_tm(t, &parts) != 1:
        raise VerificationError(VerifyFailure.BAD_CERTIFICATE, "unreadable validity time")
    return <double>timegm(&parts)


cdef str _leaf_spiffe_id(X509* leaf):
    """The one URI SAN, strictly parsed (NO_URI_SAN, MULTIPLE_URI_SANS, INVALID_SPIFFE_ID)."""
    return _leaf_spiffe_id_parts(leaf)[0]


cdef tuple _leaf_spiffe_id_parts(X509* leaf):
    """(SPIFFE ID, trust domain, path) of the one URI SAN: parsed once, for _check_leaf too."""
    cdef int crit = 0, i, count = 0
    cdef const ASN1_STRING* uri = NULL
    cdef const ASN1_STRING* found = NULL
    cdef GENERAL_NAMES* names = <GENERAL_NAMES*>X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL)
    if names == NULL:
        ERR_clear_error()
        if crit == -1:
            raise VerificationError(VerifyFailure.NO_URI_SAN, "certificate has no URI SAN")
        raise VerificationError(VerifyFailure.BAD_CERTIFICATE, "malformed or repeated subjectAltName extension")
    try:
        for i in range(sk_GENERAL_NAME_num(names)):
            uri = spx_general_name_uri(sk_GENERAL_NAME_value(names, i))
            if uri != NULL:
                count += 1
                found = uri
        if count == 0:
            raise VerificationError(VerifyFailure.NO_URI_SAN, "certificate has no URI SAN")
        if count > 1:
            raise VerificationError(VerifyFailure.MULTIPLE_URI_SANS, f"certificate has {count} URI SANs")
        value = (<const char*>ASN1_STRING_get0_data(found))[:ASN1_STRING_length(found)].decode("utf-8", "replace")
    finally:
        GENERAL_NAMES_free(names)
    try:
        td, path = _split_spiffe_id(value)
    except InvalidSpiffeIdError as exc:
        raise VerificationError(VerifyFailure.INVALID_SPIFFE_ID, str(exc)) from None
    return value, td, path


cdef tuple _check_leaf(X509* leaf):
    """Run the leaf rules in contract order; return (spiffe_id, trust domain)."""
    cdef uint32_t flags = X509_get_extension_flags(leaf)
    cdef uint32_t ku, xku
    # EXFLAG_INVALID is not a reason of its own: OpenSSL sets it for an empty
    # key usage too, which the contract calls BAD_KEY_USAGE (checked below).
    sid, td, path = _leaf_spiffe_id_parts(leaf)
    if not path:
        raise VerificationError(VerifyFailure.ROOT_PATH, f"{sid}: a leaf SVID needs a non-root path")
    if flags & EXFLAG_CA:
        raise VerificationError(VerifyFailure.LEAF_IS_CA, f"{sid}: leaf certificate is a CA")
    ku = X509_get_key_usage(leaf)
    if not (flags & EXFLAG_KUSAGE) or not (ku & KU_DIGITAL_SIGNATURE) or (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)):
        raise VerificationError(VerifyFailure.BAD_KEY_USAGE,
                                f"{sid}: key usage must have digitalSignature and neither keyCertSign nor cRLSign")
    if flags & EXFLAG_XKUSAGE:
        xku = X509_get_extended_key_usage(leaf)
        if (xku & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) != (XKU_SSL_SERVER | XKU_SSL_CLIENT):
            raise VerificationError(VerifyFailure.BAD_EXTENDED_KEY_USAGE,
                                    f"{sid}: extended key usage must have both serverAuth and clientAuth")
    return sid, td


# --- Trust stores and path validation ----------------------------------------------


@cython.final
cdef class _TrustStore:
    """One trust domain's authorities as an X509_STORE (never merged with another)."""

    cdef X509_STORE* store
    cdef stack_st_X509* anchors
    cdef readonly str trust_domain
    # The first authority whose key breaks the strength policy, judged once
    # here rather than per handshake; None when all are strong.
    cdef readonly object weak_anchor

    def __cinit__(self, str trust_domain, object authorities_der):
        self.trust_domain = trust_domain
        self.store = X509_STORE_new()
        self.anchors = sk_X509_new_null()
        if self.store == NULL or self.anchors == NULL:
            raise MemoryError()
        cdef X509* x
        for i, der in enumerate(authorities_der):
            x = _d2i_x509(bytes(der))
            X509_STORE_add_cert(self.store, x)  # duplicates are harmless
            sk_X509_push(self.anchors, x)  # the stack owns x from here
            rule = _key_rule(x)
            if rule is not None and self.weak_anchor is None:
                self.weak_anchor = f"authority {i} of trust domain {trust_domain}: {rule}"
        ERR_clear_error()

    def __dealloc__(self):
        if self.store != NULL:
            X509_STORE_free(self.store)
        if self.anchors != NULL:
            sk_X509_pop_free(self.anchors, X509_free)

    cdef bint is_anchor(self, X509* x):
        """True when x is (a copy of) one of these authorities."""
        cdef int i
        for i in range(sk_X509_num(self.anchors)):
            if X509_cmp(x, sk_X509_value(self.anchors, i)) == 0:
                return True
        return False


cdef int _check_cert_strength(_TrustStore ts, X509* x, int index, str sid) except -1:
    if ts.is_anchor(x):
        return 0  # judged as an authority (key only), with the others
    what = "leaf" if index == 0 else f"chain certificate {index}"
    rule = _key_rule(x)
    if rule is not None:
        raise VerificationError(VerifyFailure.WEAK_KEY, f"{sid}: {what}: {rule}")
    rule = _signature_rule(x)
    if rule is not None:
        raise VerificationError(VerifyFailure.WEAK_SIGNATURE, f"{sid}: {what}: {rule}")
    return 0


cdef int _check_strength(_TrustStore ts, X509* leaf, stack_st_X509* untrusted, str sid) except -1:
    """WEAK_KEY / WEAK_SIGNATURE: every certificate the peer sent, in its order, then the authorities' keys.

    untrusted is what the peer sent: in the handshake it starts with the
    leaf itself (skipped, judged first), in the twin API it does not.
    """
    cdef int i, index = 1
    cdef X509* x
    _check_cert_strength(ts, leaf, 0, sid)
    if untrusted != NULL:
        for i in range(sk_X509_num(untrusted)):
            x = sk_X509_value(untrusted, i)
            if x != leaf:
                _check_cert_strength(ts, x, index, sid)
                index += 1
    if ts.weak_anchor is not None:
        raise VerificationError(VerifyFailure.WEAK_KEY, f"{sid}: {ts.weak_anchor}")
    return 0


cdef dict _build_stores(object bundles):
    return {str(td): _TrustStore(str(td), ders) for td, ders in bundles.items()}


cdef int _verify_path(_TrustStore ts, X509* leaf, stack_st_X509* untrusted, time_t now, str sid) except -1:
    """RFC 5280 validation to ts only: UNTRUSTED_CHAIN, or EXPIRED / NOT_YET_VALID for the leaf.

    OpenSSL builds the path, checks the CAs, then verifies signatures and
    validity from the root down, stopping at the first error: the leaf's
    own validity is therefore judged only on an otherwise good path, as in
    the Python core. Every bundle entry is a trust anchor, self-signed or
    not (SPIRE with an upstream authority publishes its intermediate; Go's
    verifier, hence go-spiffe, treats roots the same): PARTIAL_CHAIN.
    """
    cdef X509_STORE_CTX* ctx = X509_STORE_CTX_new()
    cdef int ok, err, depth
    if ctx == NULL:
        raise MemoryError()
    try:
        if X509_STORE_CTX_init(ctx, ts.store, leaf, untrusted) != 1:
            raise MemoryError()
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_PARTIAL_CHAIN)
        X509_STORE_CTX_set_time(ctx, 0, now)
        ok = X509_verify_cert(ctx)
        err = X509_STORE_CTX_get_error(ctx)
        depth = X509_STORE_CTX_get_error_depth(ctx)
    finally:
        X509_STORE_CTX_free(ctx)
        ERR_clear_error()
    if ok == 1:
        return 0
    if depth == 0 and err == X509_V_ERR_CERT_HAS_EXPIRED:
        raise VerificationError(VerifyFailure.EXPIRED, f"{sid}: certificate has expired")
    if depth == 0 and err == X509_V_ERR_CERT_NOT_YET_VALID:
        raise VerificationError(VerifyFailure.NOT_YET_VALID, f"{sid}: certificate is not yet valid")
    raise VerificationError(VerifyFailure.UNTRUSTED_CHAIN,
                            f"{sid}: no valid chain to the {ts.trust_domain!r} bundle: "
                            f"{X509_verify_cert_error_string(err).decode()} (depth {depth})")


# --- Twins (Python API) ----------------------------------------------------------------


def parse_spiffe_id(str s) -> tuple:
    """(trust domain name, path) of a strictly parsed SPIFFE ID; raises InvalidSpiffeIdError."""
    return _split_spiffe_id(s)


def spiffe_id_from_der(bytes der) -> str:
    """The one URI SAN of a DER certificate, strictly parsed; raises VerificationError."""
    cdef X509* x = _d2i_x509(der)
    try:
        return _leaf_spiffe_id(x)
    finally:
        X509_free(x)


def verify_x509_svid_chain(chain_der, bundles, now=None) -> str:
    """SPIFFE peer verification in the contract's order; returns the peer's SPIFFE ID."""
    if len(chain_der) == 0:
        raise VerificationError(VerifyFailure.NO_CERTIFICATE, "empty certificate chain")
    cdef X509* leaf = _d2i_x509(bytes(chain_der[0]))
    cdef stack_st_X509* untrusted = NULL
    cdef time_t t = time(NULL)
    if now is not None:
        t = <time_t>now
    try:
        sid, td = _check_leaf(leaf)
        if td not in bundles:
            raise VerificationError(VerifyFailure.UNKNOWN_TRUST_DOMAIN, f"{sid}: no bundle for trust domain {td!r}")
        ts = _TrustStore(td, bundles[td])
        untrusted = sk_X509_new_null()
        for der in chain_der[1:]:
            sk_X509_push(untrusted, _d2i_x509(bytes(der)))
        _check_strength(ts, leaf, untrusted, sid)
        _verify_path(ts, leaf, untrusted, t, sid)
        return sid
    finally:
        X509_free(leaf)
        if untrusted != NULL:
            sk_X509_pop_free(untrusted, X509_free)
