"""The agent's local CA for one trust domain: X.509-SVIDs, JWT-SVIDs, bundles.

X.509 issuing lives here, not in proxy/spiffe (the core only validates);
JWT-SVIDs are signed by the core's ``mint_jwt_svid`` (one claims encoder for
the project), with the authority chosen and its lifetime enforced here. Every
X.509-SVID follows the X.509-SVID profile the core checks: one URI SAN, leaf not
CA (critical basicConstraints), critical keyUsage digitalSignature only,
EKU serverAuth + clientAuth, SKI/AKI, NotBefore slightly backdated for
clock skew, NotAfter never past the signing authority's.

Rotation (times as fractions of an authority's lifetime `ca_ttl`):

    0 ........ 1/2 ............ 2/3 ................ NotAfter
    active     next prepared    next activated       old one retired once the
               and published    (signs from now on)  last SVID/JWT it signed expired

Publishing the next authority before it signs anything gives every peer a
whole renewal cycle to learn it; keeping the old one until its last SVID
expires keeps already-issued SVIDs verifiable. That gap (1/6 of the
lifetime) is kept when the next authority is prepared late, too: an agent
restarted (or resumed) past the 2/3 point prepares it on start and lets it
sign only a gap later, or at the old one's NotAfter if that comes first;
otherwise it would sign with a root no peer had been sent yet. Each authority has its own
JWT signing key (its `kid`), published in the JWKS with use "jwt-svid".

Persistence (`ca_dir`): each authority is one PEM file (certificate, CA
key, JWT key) written 0600 in a 0700 directory, so a restart keeps the
trust domain's roots and peers need no new bundle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.agent.config import TrustDomainConfig
from proxy.errors import SidecarError
from proxy.spiffe.id import SpiffeId
from proxy.spiffe.jwt_svid import mint_jwt_svid, public_jwk

UTC = dt.timezone.utc
BACKDATE = 30.0
PREPARE_AT = 1 / 2
ACTIVATE_AT = 2 / 3
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(slots=True)
class Authority:
    """One CA certificate with its keys, and the last expiry of anything it signed."""

    cert: x509.Certificate
    key: PrivateKey
    jwt_key: PrivateKey
    kid: str
    last_expiry: float = 0.0
    der: bytes = b""

    def __post_init__(self) -> None:
        self.der = self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def not_before(self) -> float:
        return self.cert.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    def at(self, fraction: float) -> float:
        """The moment `fraction` of this authority's lifetime has passed."""
        return self.not_before + BACKDATE + (self.not_after - self.not_before - BACKDATE) * fraction


@dataclass(frozen=True, slots=True)
class IssuedX509:
    """An X.509-SVID as the Workload API sends it."""

    spiffe_id: SpiffeId
    chain_der: bytes
    key_der: bytes
    serial: int
    not_before: float
    not_after: float

    def renew_at(self) -> float:
        """Half of the lifetime: SPIRE's default rotation point."""
        return self.not_before + BACKDATE + (self.not_after - self.not_before - BACKDATE) / 2


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(seconds), UTC)


@dataclass
class LocalCA:
    """The CA of one trust domain. Not thread-safe: used from the agent's trio task."""

    config: TrustDomainConfig
    authorities: list[Authority] = field(default_factory=list)
    sequence: int = 0
    _now: float = 0.0

    @property
    def trust_domain(self) -> Any:
        return self.config.trust_domain

    @classmethod
    def open(cls, config: TrustDomainConfig, now: float) -> "LocalCA":
        """Load the authorities kept in ca_dir (if any), else create the first one."""
        ca = cls(config)
        try:
            if config.ca_dir is not None:
                ca.authorities = [a for a in _load_dir(ca._dir()) if a.not_after > now + 1]
                ca.authorities.sort(key=lambda a: a.not_before)
            if not ca.authorities:
                ca._add_authority(now)
        except (OSError, ValueError, IndexError) as exc:
            raise SidecarError(f"trust domain {config.trust_domain}: cannot use ca_dir {config.ca_dir}: {exc}") from None
        ca.sequence = 1
        ca.tick(now)
        return ca

    # -- rotation ------------------------------------------------------------

    @property
    def active(self) -> Authority:
        """The authority that signs now: the newest one once its activation time came."""
        if len(self.authorities) > 1 and self._now < self._activation_time():
            return self.authorities[-2]
        return self.authorities[-1]

    def _activation_time(self) -> float:
        """When the newest authority starts signing (needs a previous one; see the module docstring)."""
        previous, newest = self.authorities[-2], self.authorities[-1]
        published = newest.not_before + BACKDATE
        on_schedule = previous.at(ACTIVATE_AT)
        return min(previous.not_after, max(on_schedule, published + on_schedule - previous.at(PREPARE_AT)))

    def tick(self, now: float) -> bool:
        """Advance rotation to `now`; True when the published bundle changed."""
        self._now = now
        changed = False
        if now >= self.authorities[-1].at(PREPARE_AT):
            self._add_authority(now)
            changed = True
        active = self.active
        keep = [a for a in self.authorities
                if a is active or a.not_before >= active.not_before or now < min(a.last_expiry, a.not_after)]
        if len(keep) != len(self.authorities):
            for gone in (a for a in self.authorities if a not in keep):
                self._forget(gone)
            self.authorities = keep
            changed = True
        if changed:
            self.sequence += 1
        return changed

    def next_event(self) -> float:
        """When tick() must next run (prepare, activate or retire)."""
        times = [self.authorities[-1].at(PREPARE_AT)]
        if len(self.authorities) > 1:
            times.append(self._activation_time())
        active = self.active
        times += [min(a.last_expiry, a.not_after) for a in self.authorities if a.not_before < active.not_before]
        return min(t for t in times if t > self._now) if any(t > self._now for t in times) else self._now + 60

    def _add_authority(self, now: float) -> None:
        key, jwt_key = _new_key(self.config.key_type), _new_key(self.config.key_type)
        td = self.config.trust_domain
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-sidecar"),
                          x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8))])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(_ts(now - BACKDATE)).not_valid_after(_ts(now + self.config.ca_ttl))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(td.id_string())]), critical=False)
                .sign(key, hashes.SHA256()))
        authority = Authority(cert, key, jwt_key, kid=secrets.token_urlsafe(24))
        self.authorities.append(authority)
        self._save(authority)

    # -- issuing ---------------------------------------------------------------

    def issue_x509(self, spiffe_id: SpiffeId, ttl: float, dns_names: tuple[str, ...], now: float) -> IssuedX509:
        """Sign a fresh X.509-SVID (new P-256 key) with the active authority."""
        authority = self.active
        key = ec.generate_private_key(ec.SECP256R1())
        # Certificates hold whole seconds: round up so an SVID lives its full TTL, never past its CA.
        not_after = float(min(math.ceil(now + ttl), int(authority.not_after)))
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
                 x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, secrets.token_hex(16))]
        if dns_names:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0]))
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
        sans += [x509.DNSName(d) for d in dns_names]
        serial = x509.random_serial_number()
        ca_ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(authority.cert.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(_ts(now - BACKDATE)).not_valid_after(_ts(not_after))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(authority.key, hashes.SHA256()))
        authority.last_expiry = max(authority.last_expiry, not_after)
        key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return IssuedX509(spiffe_id, cert.public_bytes(serialization.Encoding.DER), key_der, serial,
                          now - BACKDATE, not_after)

    def mint_jwt(self, spiffe_id: SpiffeId, audience: list[str], ttl: float, now: float) -> tuple[str, float]:
        """Sign a JWT-SVID with the active authority's JWT key; returns (token, exp).

        Signing is the core's ``mint_jwt_svid``; what stays here is the CA's
        part: the token never outlives its authority, and the authority is
        kept published until the token expired.
        """
        authority = self.active
        # Whole seconds on both ends, so the token's exp is exactly the one recorded here.
        iat = int(now)
        exp = int(min(now + ttl, authority.not_after))
        token = mint_jwt_svid(spiffe_id, audience, authority.jwt_key, authority.kid, now=iat, ttl=exp - iat)
        authority.last_expiry = max(authority.last_expiry, float(exp))
        return token, float(exp)

    # -- bundles -----------------------------------------------------------------

    def x509_bundle_der(self) -> bytes:
        """Every published authority, DER-concatenated (the Workload API's bundle form)."""
        return b"".join(a.der for a in self.authorities)

    def jwks(self, refresh_hint: float = 60.0) -> bytes:
        """The JWT bundle: a JWK Set with one key per published authority."""
        keys = [public_jwk(a.jwt_key.public_key(), a.kid) for a in self.authorities]
        doc = {"keys": keys, "spiffe_sequence": self.sequence, "spiffe_refresh_hint": int(refresh_hint)}
        return json.dumps(doc, separators=(",", ":")).encode()

    # -- persistence ---------------------------------------------------------------

    def _dir(self) -> Path:
        assert self.config.ca_dir is not None
        return self.config.ca_dir / self.config.trust_domain.name

    def _save(self, authority: Authority) -> None:
        if self.config.ca_dir is None:
            return
        directory = self._dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        pem = authority.cert.public_bytes(serialization.Encoding.PEM)
        for k in (authority.key, authority.jwt_key):
            pem += k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
        path = directory / f"authority-{authority.kid}.pem"
        # Write a 0600 temp file in the same directory and rename it over the target: writing
        # in place with O_TRUNC would leave a truncated PEM after a crash mid-write, and the
        # agent would then refuse to start.
        fd, tmp = tempfile.mkstemp(prefix=f".authority-{authority.kid}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _forget(self, authority: Authority) -> None:
        if self.config.ca_dir is not None:
            (self._dir() / f"authority-{authority.kid}.pem").unlink(missing_ok=True)


def _load_dir(directory: Path) -> list[Authority]:
    out = []
    for path in sorted(directory.glob("authority-*.pem")) if directory.is_dir() else []:
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
        blocks = data.split(b"-----END PRIVATE KEY-----")
        keys = [serialization.load_pem_private_key(b + b"-----END PRIVATE KEY-----", None)
                for b in blocks if b"BEGIN PRIVATE KEY" in b]
        kid = path.name[len("authority-"):-len(".pem")]
        a = Authority(cert, keys[0], keys[1], kid=kid)  # type: ignore[arg-type]
        a.last_expiry = a.not_after  # unknown after a restart: keep until NotAfter
        out.append(a)
    return out
