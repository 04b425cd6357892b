"""X.509-SVIDs: the one SAN extractor, the leaf profile rules, and our own SVID.

Peer verification (``proxy.spiffe.verify``) and the validation of the SVID we
are handed (``X509Svid.parse``) apply the same leaf-profile rules from the
X509-SVID standard; they live here once (``leaf_profile_failure``) so the two
can never drift, and each caller maps a failure to its own error type: a
peer's bad SVID is a ``VerificationError`` (a metric label), our own is an
``InvalidSvidError`` (a configuration or issuer problem).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.errors import (
    InvalidBundleError,
    InvalidSpiffeIdError,
    InvalidSvidError,
    VerificationError,
    VerifyFailure,
)
from proxy.spiffe.id import SpiffeId
from proxy.spiffe.strength import strength_failure

_SEQUENCE_TAG = 0x30
# Four length octets already allow 4 GiB: anything longer is garbage.
_MAX_LENGTH_OCTETS = 4


def load_certificate(der: bytes) -> x509.Certificate:
    """Parse one DER certificate, or raise VerificationError(BAD_CERTIFICATE)."""
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except (ValueError, TypeError) as exc:
        raise VerificationError(VerifyFailure.BAD_CERTIFICATE, f"not a DER X.509 certificate: {exc}") from None


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeId:
    """Return the SPIFFE ID in the certificate's one URI SAN.

    This is the only SAN extractor in the sidecar (py-spiffe has several
    that disagree). A certificate with zero or several URI SANs has no
    SPIFFE identity: X509-SVID §2 makes more than one a hard reject, rather
    than "use the first" as Envoy does.

    Raises:
        VerificationError: NO_URI_SAN, MULTIPLE_URI_SANS, INVALID_SPIFFE_ID,
            or BAD_CERTIFICATE when the extensions cannot be decoded.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    except (ValueError, TypeError, x509.DuplicateExtension) as exc:
        raise VerificationError(VerifyFailure.BAD_CERTIFICATE, f"unreadable extensions: {exc}") from None
    if not uris:
        raise VerificationError(VerifyFailure.NO_URI_SAN, "certificate has no URI SAN")
    if len(uris) > 1:
        raise VerificationError(VerifyFailure.MULTIPLE_URI_SANS, f"certificate has {len(uris)} URI SANs")
    try:
        return SpiffeId.parse(uris[0])
    except InvalidSpiffeIdError as exc:
        raise VerificationError(VerifyFailure.INVALID_SPIFFE_ID, str(exc)) from None


def spiffe_id_from_der(der: bytes) -> SpiffeId:
    """Parse a DER certificate and return its SPIFFE ID (see spiffe_id_from_certificate)."""
    return spiffe_id_from_certificate(load_certificate(der))


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def leaf_profile_failure(cert: x509.Certificate, spiffe_id: SpiffeId) -> tuple[VerifyFailure, str] | None:
    """Check a leaf against X509-SVID §3-4 (after its ID was extracted).

    Order is the engine twins' contract: root path, CA flag, key usage,
    extended key usage. Key usage must be present: the spec makes it
    mandatory, and "digitalSignature set" cannot hold on an absent one.

    Returns:
        ``(reason, detail)`` for the first rule broken, or None.
    """
    if spiffe_id.is_root:
        return VerifyFailure.ROOT_PATH, f"leaf SPIFFE ID {spiffe_id} has no path"
    bc = _extension(cert, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        return VerifyFailure.LEAF_IS_CA, "leaf certificate has cA=true"
    ku = _extension(cert, x509.KeyUsage)
    if not isinstance(ku, x509.KeyUsage):
        return VerifyFailure.BAD_KEY_USAGE, "leaf certificate has no key usage extension"
    if not ku.digital_signature:
        return VerifyFailure.BAD_KEY_USAGE, "leaf key usage lacks digitalSignature"
    if ku.key_cert_sign or ku.crl_sign:
        return VerifyFailure.BAD_KEY_USAGE, "leaf key usage must not have keyCertSign or cRLSign"
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage):
        usages = set(eku)
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages or ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            return VerifyFailure.BAD_EXTENDED_KEY_USAGE, "leaf extended key usage must have serverAuth and clientAuth"
    return None


def signing_cert_failure(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot sign certificates (cA=true and keyCertSign), or None."""
    bc = _extension(cert, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        return "signing certificate must have cA=true"
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        return "signing certificate key usage must have keyCertSign"
    return None


def split_der_certificates(blob: bytes) -> list[bytes]:
    """Split concatenated DER certificates (the Workload API's encoding).

    FetchX509SVID and FetchX509Bundles carry several certificates in one
    bytes field with no framing but the ASN.1 SEQUENCE header of each, so the
    header's length is the only boundary. Only the framing is checked here;
    each piece is parsed by its user.

    Raises:
        InvalidBundleError: the blob is not a sequence of DER SEQUENCEs.
    """
    data = bytes(blob)
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = _der_element_end(data, pos)
        out.append(data[pos:end])
        pos = end
    return out


def _der_element_end(data: bytes, pos: int) -> int:
    if data[pos] != _SEQUENCE_TAG:
        raise InvalidBundleError(f"byte {pos}: expected a DER SEQUENCE (0x30), found 0x{data[pos]:02x}")
    if pos + 2 > len(data):
        raise InvalidBundleError(f"byte {pos}: truncated DER length")
    first = data[pos + 1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > _MAX_LENGTH_OCTETS or pos + 2 + count > len(data):
            raise InvalidBundleError(f"byte {pos}: invalid or truncated DER length")
        length, header = int.from_bytes(data[pos + 2:pos + 2 + count], "big"), 2 + count
    end = pos + header + length
    if end > len(data):
        raise InvalidBundleError(f"byte {pos}: DER element of {length} bytes runs past the end ({len(data)} bytes)")
    return end


@dataclass(frozen=True, slots=True, kw_only=True)
class X509Svid:
    """Our own X.509-SVID: a validated chain and its private key, as DER.

    DER bytes (not cryptography objects) because that is what crosses into
    both TLS engines and what the Workload API carries.

    Attributes:
        spiffe_id: the leaf's SPIFFE ID.
        chain_der: leaf first, then intermediates (never the root).
        key_der: the leaf's private key, PKCS#8 DER.
        not_after: leaf expiry, Unix seconds.
        not_before: leaf start of validity, Unix seconds.
        hint: the Workload API's operator hint for choosing among SVIDs.
    """

    spiffe_id: SpiffeId
    chain_der: tuple[bytes, ...]
    key_der: bytes
    not_after: float
    not_before: float
    hint: str = ""

    @classmethod
    def parse(cls, chain_der: Sequence[bytes], key_der: bytes, hint: str = "") -> X509Svid:
        """Validate a chain and key against the X509-SVID profile (as go-spiffe's x509svid.Parse).

        Raises:
            InvalidSvidError: naming the rule broken and, when readable, the claimed ID.
        """
        if not chain_der:
            raise InvalidSvidError("certificate chain is empty")
        certs = _load_chain(chain_der)
        leaf = certs[0]
        try:
            spiffe_id = spiffe_id_from_certificate(leaf)
        except VerificationError as exc:
            raise InvalidSvidError(exc.detail) from None
        failure = leaf_profile_failure(leaf, spiffe_id)
        if failure is not None:
            raise InvalidSvidError(failure[1], str(spiffe_id))
        for i, cert in enumerate(certs[1:], start=1):
            rule = signing_cert_failure(cert) or _signing_id_failure(cert)
            if rule is not None:
                raise InvalidSvidError(f"chain certificate {i}: {rule}", str(spiffe_id))
        _check_strength(certs, str(spiffe_id))
        pkcs8 = _matching_pkcs8(leaf, key_der, str(spiffe_id))
        return cls(spiffe_id=spiffe_id, chain_der=tuple(bytes(c) for c in chain_der), key_der=pkcs8,
                   not_after=leaf.not_valid_after_utc.timestamp(),
                   not_before=leaf.not_valid_before_utc.timestamp(), hint=hint)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, hint: str = "") -> X509Svid:
        """Validate a PEM chain (leaf first) and a PEM private key (e.g. from files).

        Raises:
            InvalidSvidError: unreadable PEM, or any rule of ``parse``.
        """
        try:
            certs = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise InvalidSvidError(f"certificate PEM is unreadable: {exc}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidSvidError(f"private key PEM is unreadable: {exc}") from None
        chain = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cls.parse(chain, key_der, hint)

    def to_pem(self) -> tuple[bytes, bytes]:
        """Return ``(chain PEM, PKCS#8 key PEM)`` for writing files or loading pyOpenSSL."""
        chain = b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                         for d in self.chain_der)
        key = serialization.load_der_private_key(self.key_der, password=None)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return chain, key_pem

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate, parsed (each call parses: the dataclass holds bytes only)."""
        return x509.load_der_x509_certificate(self.chain_der[0])


def _check_strength(certs: list[x509.Certificate], claimed: str) -> None:
    """Our own chain obeys the policy we hold peers to (proxy.spiffe.strength): never serve a weak SVID."""
    for i, cert in enumerate(certs):
        failure = strength_failure(cert)
        if failure is not None:
            what = "leaf" if i == 0 else f"chain certificate {i}"
            raise InvalidSvidError(f"{what}: {failure[0].value}: {failure[1]}", claimed)


def _signing_id_failure(cert: x509.Certificate) -> str | None:
    """X509-SVID §3.2: a signing certificate's SPIFFE ID, if any, has no path."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://") and "/" in uri[len("spiffe://"):]:
            return f"signing certificate SPIFFE ID {uri!r} must not have a path"
    return None


def _load_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    certs = []
    for i, der in enumerate(chain_der):
        try:
            certs.append(x509.load_der_x509_certificate(bytes(der)))
        except (ValueError, TypeError) as exc:
            raise InvalidSvidError(f"chain certificate {i} is not DER X.509: {exc}") from None
    return certs


def _matching_pkcs8(leaf: x509.Certificate, key_der: bytes, claimed: str) -> bytes:
    """Load the private key, check it is the leaf's, and return it as PKCS#8 DER."""
    try:
        key = serialization.load_der_private_key(bytes(key_der), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidSvidError(f"private key is not DER PKCS#8: {exc}", claimed) from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise InvalidSvidError("private key does not match the leaf certificate", claimed)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
