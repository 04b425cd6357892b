"""The benchmark's own PKI: one CA, a client and a server X.509-SVID.

Written with `cryptography` directly so the benchmark never depends on the
test tree. Every variant (sidecar, haproxy, nginx, stunnel) is handed the very
same files, so the handshakes they do are comparable: ECDSA P-256 keys,
SHA-256 signatures, one URI SAN, EKU serverAuth+clientAuth (SPIFFE X.509-SVID).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "example.org"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/server"


@dataclass(frozen=True, slots=True)
class SvidFiles:
    """Paths of one workload's SVID: `cert` (leaf PEM), `key` (PKCS#8 PEM) and
    `combined` (cert then key, the single-file form haproxy wants)."""

    cert: Path
    key: Path
    combined: Path


@dataclass(frozen=True, slots=True)
class BenchPki:
    """Everything a variant needs: the CA bundle and both SVIDs."""

    ca: Path
    client: SvidFiles
    server: SvidFiles


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-sidecar bench"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}")]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_svid(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, spiffe_id: str,
               now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(spiffe_id.rsplit("/", 1)[-1])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write_svid(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> SvidFiles:
    files = SvidFiles(directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.combined.pem")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(_key_pem(key))
    files.combined.write_bytes(cert_pem + _key_pem(key))
    for p in (files.key, files.combined):
        p.chmod(0o600)
    return files


def write_pki(directory: Path) -> BenchPki:
    """Mint a fresh CA and both SVIDs into `directory` (fresh per run, so no
    benchmark ever runs on stale or shared key material)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ca = _make_ca(now)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    client = _write_svid(directory, "client", *_make_svid(ca_key, ca, CLIENT_ID, now))
    server = _write_svid(directory, "server", *_make_svid(ca_key, ca, SERVER_ID, now))
    return BenchPki(ca=ca_path, client=client, server=server)
