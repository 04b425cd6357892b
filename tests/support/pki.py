"""The test PKI: the one builder of CAs, X.509-SVIDs (valid and every kind of broken) and TLS material.

Tests use it to make real certificates (never canned PEM blobs) so that a
rule is exercised by a certificate that breaks exactly that rule. One
``make_ca`` and one ``make_svid`` build every certificate; the
``make_constrained_ca`` / ``make_svid_with_*`` names are shorthands for
their options. (bench/pki.py is separate on purpose: the benchmark never
imports the test tree.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.tls.material import TlsMaterial

UTC = dt.timezone.utc


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


_CURVES: dict[str, ec.EllipticCurve] = {"ec": ec.SECP256R1(), "p256": ec.SECP256R1(), "p384": ec.SECP384R1(),
                                        "p521": ec.SECP521R1(), "p192": ec.SECP192R1(), "p224": ec.SECP224R1()}
_RSA_BITS = {"rsa": 2048, "rsa1024": 1024, "rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}

#: Every key kind new_key makes (kinds cryptography refuses are in support/pki_cli.py).
KEY_KINDS = (*_CURVES, *_RSA_BITS, "ed25519")


def new_key(kind: str = "ec") -> Any:
    """A private key: "ec"/"p256", "p384", "p521", "p192", "p224", "rsa"(2048), "rsa1024"..."rsa4096", "ed25519"."""
    if kind in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[kind])
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(_CURVES[kind])


def digest_for(key: object) -> hashes.HashAlgorithm | None:
    """The hash to sign with: SHA-256, or None for EdDSA (which hashes internally)."""
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def key_pkcs8_der(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Ca:
    """A signing certificate and its key, for one trust domain."""

    trust_domain: str
    key: object
    cert: x509.Certificate
    parent: "Ca | None" = None

    @property
    def der(self) -> bytes:
        return der(self.cert)

    def chain_above(self) -> list[x509.Certificate]:
        """Intermediates from this CA up to (excluding) the root."""
        out: list[x509.Certificate] = []
        ca: Ca | None = self
        while ca is not None and ca.parent is not None:
            out.append(ca.cert)
            ca = ca.parent
        return out


def make_ca(trust_domain: str, *, parent: Ca | None = None, key_kind: str = "ec",
            lifetime: dt.timedelta = dt.timedelta(days=1), not_before: dt.datetime | None = None,
            key_cert_sign: bool = True, path_length: int | None = None,
            permitted_uri_hosts: list[str] | None = None, key: object | None = None,
            subject: x509.Name | None = None) -> Ca:
    """A root CA (or an intermediate when parent is given) for trust_domain.

    ``path_length`` / ``permitted_uri_hosts`` add a pathLenConstraint and URI
    name constraints (RFC 5280 4.2.1.9-10); ``key`` and ``subject`` reuse a
    key or a name (impostor CAs that all sign each other).
    """
    key = key if key is not None else new_key(key_kind)
    start = not_before or (_now() - dt.timedelta(minutes=5))
    subject = subject or x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-sidecar tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} CA {id(key) & 0xffff:x}")])
    issuer_name = parent.cert.subject if parent else subject
    signer = parent.key if parent else key
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())  # type: ignore[attr-defined]
         .not_valid_before(start).not_valid_after(start + lifetime)
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                        critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))  # type: ignore[attr-defined]
    if permitted_uri_hosts is not None:
        b = b.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.UniformResourceIdentifier(h) for h in permitted_uri_hosts],
            excluded_subtrees=None), critical=True)
    if parent:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)  # type: ignore[attr-defined]
    cert = b.sign(signer, digest_for(signer))  # type: ignore[arg-type]
    return Ca(trust_domain=trust_domain, key=key, cert=cert, parent=parent)


@dataclass
class Leaf:
    """An X.509-SVID (possibly deliberately broken) with its key and chain."""

    cert: x509.Certificate
    key: object
    chain: list[x509.Certificate] = field(default_factory=list)  # leaf first

    @property
    def chain_der(self) -> list[bytes]:
        return [der(c) for c in self.chain]

    @property
    def key_der(self) -> bytes:
        return key_pkcs8_der(self.key)

    def write_pem(self, directory: "object", name: str = "svid") -> tuple[str, str]:
        """Write <name>.pem (chain) and <name>.key.pem; return their paths."""
        import pathlib

        d = pathlib.Path(str(directory))
        cert_path, key_path = d / f"{name}.pem", d / f"{name}.key.pem"
        cert_path.write_bytes(b"".join(pem(c) for c in self.chain))
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                                    serialization.NoEncryption()))
        key_path.chmod(0o600)
        return str(cert_path), str(key_path)


def make_svid(ca: Ca, spiffe_id: str | None = "/workload", *, uris: list[str] | None = None,
              is_ca: bool = False, digital_signature: bool = True, key_cert_sign: bool = False,
              crl_sign: bool = False, eku: list[x509.ObjectIdentifier] | None = None, no_eku: bool = False,
              no_key_usage: bool = False, lifetime: dt.timedelta = dt.timedelta(hours=1),
              not_before: dt.datetime | None = None, key_kind: str = "ec", dns_names: list[str] | None = None,
              signer: Ca | None = None, key_usage: x509.KeyUsage | None = None,
              extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()) -> Leaf:
    """Mint a leaf under `ca`.

    spiffe_id: a path ("/workload", joined to ca's trust domain), a full
    URI, or None for no URI SAN; `uris` overrides it with a raw list.
    `signer` signs with a different CA's key while naming `ca` as issuer
    (a forged chain). `key_usage` replaces the key usage verbatim;
    `extensions` adds (extension, critical) pairs.
    """
    key = new_key(key_kind)
    if uris is None:
        if spiffe_id is None:
            uris = []
        elif spiffe_id.startswith("/") or spiffe_id == "":
            uris = [f"spiffe://{ca.trust_domain}{spiffe_id}"]
        else:
            uris = [spiffe_id]
    start = not_before or (_now() - dt.timedelta(minutes=1))
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
         .issuer_name(ca.cert.subject).public_key(key.public_key())  # type: ignore[attr-defined]
         .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))  # type: ignore[attr-defined]
    if not no_key_usage:
        b = b.add_extension(key_usage or x509.KeyUsage(
            digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
            encipher_only=False, decipher_only=False), critical=True)
    if not no_eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku if eku is not None else
                                                  [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns_names or []]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension, critical in extensions:
        b = b.add_extension(extension, critical=critical)
    signing_key = (signer or ca).key
    cert = b.sign(signing_key, digest_for(signing_key))  # type: ignore[arg-type]
    return Leaf(cert=cert, key=key, chain=[cert, *ca.chain_above()])


def make_constrained_ca(trust_domain: str, *, parent: Ca | None = None, path_length: int | None = None,
                        permitted_uri_hosts: list[str] | None = None,
                        lifetime: dt.timedelta = dt.timedelta(days=1)) -> Ca:
    """A CA with a pathLenConstraint and/or URI name constraints (make_ca's options, by their old name)."""
    return make_ca(trust_domain, parent=parent, path_length=path_length, permitted_uri_hosts=permitted_uri_hosts,
                   lifetime=lifetime)


def make_svid_with_extension(ca: Ca, extension: x509.ExtensionType, *, critical: bool,
                             spiffe_id: str = "/workload") -> Leaf:
    """A valid SVID under `ca` that also carries `extension` (e.g. an unknown critical one)."""
    return make_svid(ca, spiffe_id, no_eku=True, extensions=[(extension, critical)])


def make_svid_with_key_usage(ca: Ca, key_usage: x509.KeyUsage, *, spiffe_id: str = "/workload") -> Leaf:
    """A valid SVID under `ca` except for its (critical) key usage, given verbatim."""
    return make_svid(ca, spiffe_id, no_eku=True, key_usage=key_usage)


def tls_material(leaf: Leaf, bundles: Mapping[str, Sequence[bytes]], *, generation: int = 1,
                 chain_der: Sequence[bytes] | None = None, key_der: bytes | None = None) -> TlsMaterial:
    """The engines' input for `leaf` (its one URI SAN, chain, key, expiry) trusting `bundles`.

    ``chain_der`` / ``key_der`` replace the leaf's (broken material for the engines' refusals).
    """
    try:
        sans = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return TlsMaterial(spiffe_id=uris[0] if uris else "",
                       chain_der=tuple(leaf.chain_der if chain_der is None else chain_der),
                       key_der=leaf.key_der if key_der is None else key_der,
                       bundles={td: tuple(ders) for td, ders in bundles.items()},
                       not_after=leaf.cert.not_valid_after_utc.timestamp(), generation=generation)
