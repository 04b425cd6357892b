# Key and signature strength in C: the twin of proxy/spiffe/strength.py.
# Included by _fastpath.pyx before _fastpath_spiffe.pxi, whose trust stores
# judge their authorities with _key_rule and whose _check_strength runs these
# rules over a peer's chain in the contract's order.
#
# Our own rules, not OpenSSL's security level: the verify callback runs its
# own X509_STORE_CTX, which does not inherit the SSL's level, and the
# reference engine must reach the same verdict in Python. The texts follow
# proxy/spiffe/strength.py (only the reasons are parity-tested).

cdef int _MIN_RSA_BITS = 2048


cdef str _key_rule(X509* x):
    """Why x's public key is too weak or unsupported, or None (twin of strength.key_failure)."""
    cdef X509_PUBKEY* xpk = X509_get_X509_PUBKEY(x)
    cdef ASN1_OBJECT* alg = NULL
    cdef X509_ALGOR* pa = NULL
    cdef const ASN1_OBJECT* pobj = NULL
    cdef const void* pval = NULL
    cdef int ptype = 0, nid, bits
    cdef EVP_PKEY* pkey
    if xpk == NULL or X509_PUBKEY_get0_param(&alg, NULL, NULL, &pa, xpk) != 1:
        ERR_clear_error()
        return "unreadable public key"
    nid = OBJ_obj2nid(alg)
    if nid == NID_rsaEncryption:
        pkey = X509_get0_pubkey(x)
        if pkey == NULL:
            ERR_clear_error()
            return "unreadable RSA key"
        bits = EVP_PKEY_get_bits(pkey)
        return None if bits >= _MIN_RSA_BITS else f"RSA key of {bits} bits (at least {_MIN_RSA_BITS} required)"
    if nid == NID_X9_62_id_ecPublicKey:
        # The encoded parameters, not the decoded key: OpenSSL maps explicit
        # parameters that describe a named curve to that curve.
        X509_ALGOR_get0(&pobj, &ptype, &pval, pa)
        if ptype != V_ASN1_OBJECT or pval == NULL:
            return "EC key with explicit (or absent) curve parameters: a named curve is required"
        nid = OBJ_obj2nid(<const ASN1_OBJECT*>pval)
        if nid == NID_X9_62_prime256v1 or nid == NID_secp384r1 or nid == NID_secp521r1:
            return None
        return "EC key on a curve other than P-256, P-384 or P-521"
    if nid == NID_ED25519:
        return None
    return f"unsupported key type {_nid_name(nid)} (RSA >= {_MIN_RSA_BITS}, P-256/384/521 or Ed25519 required)"


cdef str _signature_rule(X509* x):
    """Why x's signature algorithm is too weak, or None (twin of strength.signature_failure)."""
    cdef int mdnid = 0, pknid = 0, secbits = 0
    cdef uint32_t flags = 0
    if X509_get_signature_info(x, &mdnid, &pknid, &secbits, &flags) == 1:
        if pknid == NID_ED25519 and mdnid == NID_undef:
            return None
        if ((pknid == NID_rsaEncryption or pknid == NID_rsassaPss or pknid == NID_X9_62_id_ecPublicKey)
                and (mdnid == NID_sha256 or mdnid == NID_sha384 or mdnid == NID_sha512)):
            return None
    ERR_clear_error()
    return f"signature algorithm {_nid_name(X509_get_signature_nid(x))} (SHA-256/384/512 or Ed25519 required)"


cdef str _nid_name(int nid):
    cdef const char* name = OBJ_nid2sn(nid)
    return name.decode() if name != NULL else f"nid {nid}"
