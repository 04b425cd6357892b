"""Certificates cryptography refuses to make, minted with the `openssl` CLI.

cryptography will not sign with MD5 or SHA-1, generate RSA keys under 1024
bits, or write EC keys with explicit curve parameters, yet those are the
certificates a weak-crypto policy must be tested with. Here the openssl
CLI (the system's OpenSSL 3) makes the key and the CSR and signs it; the
result is loaded back into the same ``pki.Ca`` / ``pki.Leaf`` shapes the
rest of the tests use, plus the PEM of the key exactly as generated (an
explicit-parameter key re-serialised by cryptography would come back with a
named curve).

NotBefore is the signing second (``openssl x509 -req`` has no start-date
option in 3.0), so verify these with the current time, not an earlier NOW.
"""

from __future__ import annotations

import itertools
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support import pki

#: Key kinds only the CLI makes; every pki.KEY_KINDS kind works here too.
CLI_KEY_KINDS = ("rsa512", "explicit_p256", "ed448")
#: Digests accepted by `openssl x509 -req -<digest>`.
DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")

_serials = itertools.count(0x5000)


@dataclass
class CliCa(pki.Ca):
    """A CA whose key is also kept as the PEM the CLI signs with."""

    key_pem: bytes = b""


@dataclass
class CliLeaf(pki.Leaf):
    """A leaf whose key is kept as generated (see the module docstring)."""

    key_pem: bytes = b""

    def write_pem(self, directory: object, name: str = "svid") -> tuple[str, str]:
        cert_path, key_path = super().write_pem(directory, name)
        Path(key_path).write_bytes(self.key_pem)
        return cert_path, key_path


def _openssl(*args: str) -> None:
    run = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {run.stderr.strip()}")


def _key_pem(kind: str, work: Path) -> bytes:
    path = work / "key.pem"
    if kind == "rsa512":
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", str(path))
    elif kind == "ed448":
        _openssl("genpkey", "-algorithm", "ED448", "-out", str(path))
    elif kind == "explicit_p256":
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-param_enc", "explicit", "-noout", "-out", str(path))
    else:
        path.write_bytes(pki.new_key(kind).private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return path.read_bytes()


def _ca_key_pem(ca: pki.Ca) -> bytes:
    if isinstance(ca, CliCa) and ca.key_pem:
        return ca.key_pem
    return ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                serialization.NoEncryption())


def _sign(work: Path, key_pem: bytes, subject: str, extensions: str, issuer: pki.Ca | None,
          digest: str) -> x509.Certificate:
    """CSR for key_pem, signed by issuer (or self-signed) with digest and the given extension lines."""
    (work / "subject.key").write_bytes(key_pem)
    (work / "ext.cnf").write_text("[ext]\n" + extensions)
    _openssl("req", "-new", "-key", str(work / "subject.key"), "-subj", subject, "-out", str(work / "req.csr"))
    args = ["x509", "-req", "-in", str(work / "req.csr"), "-days", "1", "-set_serial", str(next(_serials)),
            "-extfile", str(work / "ext.cnf"), "-extensions", "ext", "-out", str(work / "cert.pem")]
    if digest:
        args.append(f"-{digest}")
    if issuer is None:
        args += ["-key", str(work / "subject.key")]
    else:
        (work / "ca.pem").write_bytes(pki.pem(issuer.cert))
        (work / "ca.key").write_bytes(_ca_key_pem(issuer))
        args += ["-CA", str(work / "ca.pem"), "-CAkey", str(work / "ca.key")]
    _openssl(*args)
    return x509.load_pem_x509_certificate((work / "cert.pem").read_bytes())


def _digest(digest: str, key_kind: str) -> str:
    # EdDSA signs without a separate digest; openssl refuses one.
    return "" if key_kind == "ed25519" else digest


def make_ca(trust_domain: str, *, parent: pki.Ca | None = None, key_kind: str = "ec",
            digest: str = "sha256") -> CliCa:
    """A root CA (or an intermediate under parent) with any key kind, signed with digest."""
    with tempfile.TemporaryDirectory(prefix="pki-cli-") as tmp:
        work = Path(tmp)
        key_pem = _key_pem(key_kind, work)
        ext = (f"basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
               f"subjectAltName=URI:spiffe://{trust_domain}\nsubjectKeyIdentifier=hash\n")
        if parent is not None:
            ext += "authorityKeyIdentifier=keyid\n"
        signer_kind = _kind_of(parent) if parent is not None else key_kind
        name = f"/O=spiffe-sidecar tests/CN={trust_domain} CLI CA {next(_serials):x}"
        cert = _sign(work, key_pem, name, ext, parent, _digest(digest, signer_kind))
    key = serialization.load_pem_private_key(key_pem, password=None)
    return CliCa(trust_domain=trust_domain, key=key, cert=cert, parent=parent, key_pem=key_pem)


def make_svid(ca: pki.Ca, path: str = "/workload", *, key_kind: str = "ec", digest: str = "sha256") -> CliLeaf:
    """A valid-profile X.509-SVID under ca with any key kind, signed with digest."""
    with tempfile.TemporaryDirectory(prefix="pki-cli-") as tmp:
        work = Path(tmp)
        key_pem = _key_pem(key_kind, work)
        ext = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth,clientAuth\n"
               f"subjectAltName=URI:spiffe://{ca.trust_domain}{path}\nauthorityKeyIdentifier=keyid\n")
        cert = _sign(work, key_pem, "/O=SPIRE", ext, ca, _digest(digest, _kind_of(ca)))
    key = serialization.load_pem_private_key(key_pem, password=None)
    return CliLeaf(cert=cert, key=key, chain=[cert, *ca.chain_above()], key_pem=key_pem)


def _kind_of(ca: pki.Ca) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    return "ed25519" if isinstance(ca.key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else "other"
