"""The key and signature strength policy for every certificate we trust or present.

One explicit policy, applied to each certificate of a peer's chain (leaf and
intermediates), to the authorities of a bundle (their keys), and to our own
SVID and bundles when they are loaded, identically in both TLS engines
(the compiled twin is proxy/_fastpath_strength.pxi):

- keys: RSA (rsaEncryption) of at least 2048 bits; EC only on the named curves P-256,
  P-384 and P-521 (explicit curve parameters are refused whatever curve
  they describe: they are how CVE-2020-0601 forged a CA); Ed25519. Any
  other key type (DSA, Ed448, RSA-PSS-only keys, ...) is refused. Failure: ``weak_key``.
- signatures: SHA-256, SHA-384 or SHA-512 with RSA (PKCS#1 v1.5 or PSS)
  or ECDSA, or Ed25519. MD5, SHA-1, SHA-224 and anything else are refused.
  Failure: ``weak_signature``.
- a trust anchor's own self-signature is not judged: nothing relies on it
  (RFC 5280 §6.1 starts a path at the anchor's key, and OpenSSL does not
  check it either), so a SHA-1 self-signed root with a strong key stays
  usable; its key is judged like any other.

Why our own rules rather than OpenSSL's security level: the compiled engine
verifies in its own X509_STORE_CTX, which does not inherit the connection's
level, and the reference engine's verifier is pure Python; an explicit
list gives both engines the same answer, and is stricter than level 2
where that is cheap (no SHA-224, no explicit curves).

Explicit EC parameters are found in the certificate's DER, not through
``public_key()``: cryptography maps explicit parameters that describe a
named curve to that curve, which would hide exactly what is refused.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import PublicKeyAlgorithmOID, SignatureAlgorithmOID

from proxy.errors import VerifyFailure

MIN_RSA_BITS = 2048

# DER contents of the namedCurve OIDs we accept.
_NAMED_CURVES = {
    bytes.fromhex("2a8648ce3d030107"): "P-256",  # 1.2.840.10045.3.1.7
    bytes.fromhex("2b81040022"): "P-384",  # 1.3.132.0.34
    bytes.fromhex("2b81040023"): "P-521",  # 1.3.132.0.35
}
_OID_TAG, _SEQUENCE_TAG = 0x06, 0x30

_STRONG_SIGNATURES = frozenset({
    SignatureAlgorithmOID.RSA_WITH_SHA256, SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512, SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384, SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    SignatureAlgorithmOID.ED25519,
})
_PSS_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def key_failure(cert: x509.Certificate) -> str | None:
    """Why the certificate's public key is too weak (or unsupported), or None."""
    alg = cert.public_key_algorithm_oid
    if alg == PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5:
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            return f"unreadable RSA key: {exc}"
        bits = key.key_size if isinstance(key, rsa.RSAPublicKey) else 0
        return None if bits >= MIN_RSA_BITS else f"RSA key of {bits} bits (at least {MIN_RSA_BITS} required)"
    if alg == PublicKeyAlgorithmOID.EC_PUBLIC_KEY:
        return _ec_parameters_failure(cert)
    if alg == PublicKeyAlgorithmOID.ED25519:
        return None
    return f"unsupported key type {_oid_name(alg)} (RSA >= {MIN_RSA_BITS}, P-256/384/521 or Ed25519 required)"


def signature_failure(cert: x509.Certificate) -> str | None:
    """Why the certificate's signature algorithm is too weak, or None."""
    alg = cert.signature_algorithm_oid
    if alg in _STRONG_SIGNATURES:
        return None
    if alg == SignatureAlgorithmOID.RSASSA_PSS:
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            digest = None
        if isinstance(digest, _PSS_HASHES):
            return None
        return f"RSA-PSS signature with {digest.name if digest else 'an unsupported hash'}"
    return f"signature algorithm {_oid_name(alg)} (SHA-256/384/512 or Ed25519 required)"


def strength_failure(cert: x509.Certificate) -> tuple[VerifyFailure, str] | None:
    """The first broken rule of a certificate someone else signed: its key, then its signature."""
    rule = key_failure(cert)
    if rule is not None:
        return VerifyFailure.WEAK_KEY, rule
    rule = signature_failure(cert)
    if rule is not None:
        return VerifyFailure.WEAK_SIGNATURE, rule
    return None


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = oid._name  # cryptography's short name, or "Unknown OID"
    return name if name and not name.startswith("Unknown") else oid.dotted_string


def _ec_parameters_failure(cert: x509.Certificate) -> str | None:
    try:
        params = _spki_algorithm_parameters(cert.tbs_certificate_bytes)
    except (IndexError, ValueError):
        return "unreadable EC key parameters"
    if not params or params[0] != _OID_TAG:
        return "EC key with explicit (or absent) curve parameters: a named curve is required"
    curve = _NAMED_CURVES.get(params[_header_length(params, 0):])
    if curve is None:
        return "EC key on a curve other than P-256, P-384 or P-521"
    return None


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, contents start, end) of the DER element at pos."""
    start = pos + _header_length(der, pos)
    first = der[pos + 1]
    length = first if first < 0x80 else int.from_bytes(der[pos + 2:start], "big")
    if start + length > len(der):
        raise ValueError("DER element runs past its container")
    return der[pos], start, start + length


def _header_length(der: bytes, pos: int) -> int:
    first = der[pos + 1]
    return 2 if first < 0x80 else 2 + (first & 0x7F)


def _spki_algorithm_parameters(tbs: bytes) -> bytes:
    """The DER of subjectPublicKeyInfo.algorithm.parameters (b"" when absent)."""
    _, pos, _ = _element(tbs, 0)  # into TBSCertificate
    if tbs[pos] == 0xA0:  # [0] version
        pos = _element(tbs, pos)[2]
    for _ in range(5):  # serial, signature, issuer, validity, subject
        pos = _element(tbs, pos)[2]
    _, spki, _ = _element(tbs, pos)
    tag, alg, alg_end = _element(tbs, spki)
    if tag != _SEQUENCE_TAG:
        raise ValueError("subjectPublicKeyInfo without an algorithm")
    params = _element(tbs, alg)[2]  # past the algorithm OID
    return tbs[params:alg_end]
