"""Trust bundles: per-trust-domain X.509 authorities and JWT keys.

A bundle belongs to exactly one trust domain, and bundle sets are maps keyed
by trust domain that are never merged into one pool: a CA of ``foo.test``
must not vouch for ``spiffe://bar.test/...`` (SPIFFE Federation §4.2, the
hazard of py-spiffe's single OpenSSL store). Everything is immutable, so a
rotation publishes a new set instead of growing an old one.

Three encodings are handled, each where it is used:

- concatenated DER (FetchX509SVID / FetchX509Bundles): ``X509Bundle.from_der_blob``;
- JWKS JSON (FetchJWTBundles): ``JwtBundle.from_jwks``;
- the SPIFFE bundle format (federation, files): ``parse_spiffe_bundle``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from proxy.errors import InvalidBundleError
from proxy.spiffe.id import TrustDomain
from proxy.spiffe.strength import key_failure
from proxy.spiffe.svid import split_der_certificates

USE_X509 = "x509-svid"
USE_JWT = "jwt-svid"
_KNOWN_KTY = frozenset({"RSA", "EC", "OKP"})

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class X509Bundle:
    """The X.509 authorities (root CA certificates, DER) of one trust domain."""

    trust_domain: TrustDomain
    authorities: tuple[bytes, ...]

    def __post_init__(self) -> None:
        for i, der in enumerate(self.authorities):
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError as exc:
                raise InvalidBundleError(f"{self.trust_domain}: authority {i} is not DER X.509: {exc}") from None
            # Peers are refused (weak_key) whenever their bundle holds a weak
            # authority, so such a bundle is refused here, where it arrives.
            rule = key_failure(cert)
            if rule is not None:
                raise InvalidBundleError(f"{self.trust_domain}: authority {i} "
                                         f"({cert.subject.rfc4514_string()!r}): weak_key: {rule}")

    @classmethod
    def from_der_blob(cls, trust_domain: TrustDomain, blob: bytes) -> X509Bundle:
        """Parse concatenated DER certificates (the Workload API's bundle field).

        Raises:
            InvalidBundleError: bad framing or a piece that is not a certificate.
        """
        return cls(trust_domain=trust_domain, authorities=tuple(split_der_certificates(blob)))

    def to_der_blob(self) -> bytes:
        """Concatenated DER, as the Workload API carries it."""
        return b"".join(self.authorities)

    def certificates(self) -> list[x509.Certificate]:
        """The authorities, parsed."""
        return [x509.load_der_x509_certificate(d) for d in self.authorities]


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtBundle:
    """The JWT-SVID signing keys (JWKs by key ID) of one trust domain."""

    trust_domain: TrustDomain
    keys: Mapping[str, JsonObject] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: callers' dicts must not be able to add keys later.
        frozen = {kid: dict(jwk) for kid, jwk in self.keys.items()}
        for kid in frozen:
            if not kid:
                raise InvalidBundleError(f"{self.trust_domain}: JWT authority without a key ID")
        object.__setattr__(self, "keys", MappingProxyType(frozen))

    @classmethod
    def from_jwks(cls, trust_domain: TrustDomain, data: bytes) -> JwtBundle:
        """Parse a JWKS document (FetchJWTBundles' value).

        SPIRE omits ``use`` in this encoding, so a key without ``use`` is
        taken; one with another ``use`` or an unknown ``kty`` is ignored, as
        the bundle spec says.

        Raises:
            InvalidBundleError: bad JSON, no ``keys``, a key without ``kid``, or a duplicate ``kid``.
        """
        doc = _load_json(trust_domain, data)
        keys: dict[str, JsonObject] = {}
        for i, jwk in enumerate(_keys_list(trust_domain, doc)):
            if jwk.get("use", USE_JWT) != USE_JWT or jwk.get("kty") not in _KNOWN_KTY:
                continue
            _add_jwt_key(trust_domain, keys, jwk, i)
        return cls(trust_domain=trust_domain, keys=keys)

    def to_jwks(self) -> bytes:
        """Serialise as a JWKS document (what FetchJWTBundles carries)."""
        return json.dumps({"keys": [dict(k) for k in self.keys.values()]}, sort_keys=True).encode()


def _add_jwt_key(trust_domain: TrustDomain, keys: dict[str, JsonObject], jwk: JsonObject, index: int) -> None:
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidBundleError(f"{trust_domain}: JWT key {index} has no 'kid'")
    if kid in keys:
        raise InvalidBundleError(f"{trust_domain}: duplicate JWT key ID {kid!r}")
    keys[kid] = jwk


@dataclass(frozen=True, slots=True, kw_only=True)
class SpiffeBundle:
    """A trust domain's bundle in the SPIFFE bundle format (both kinds of keys).

    Attributes:
        trust_domain: whose bundle this is.
        x509: the X.509 authorities.
        jwt: the JWT keys.
        refresh_hint: ``spiffe_refresh_hint`` in seconds, if given.
        sequence: ``spiffe_sequence``, if given.
    """

    trust_domain: TrustDomain
    x509: X509Bundle
    jwt: JwtBundle
    refresh_hint: int | None = None
    sequence: int | None = None

    def to_json(self) -> bytes:
        """Serialise per SPIFFE_Trust_Domain_and_Bundle.md §4 (x509-svid keys carry no kid)."""
        keys: list[JsonObject] = []
        for cert in self.x509.certificates():
            jwk = jwk_params(cert.public_key())
            jwk.update(use=USE_X509, x5c=[base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()])
            keys.append(jwk)
        keys.extend(dict(k, use=USE_JWT) for k in self.jwt.keys.values())
        doc: JsonObject = {"keys": keys}
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        if self.sequence is not None:
            doc["spiffe_sequence"] = self.sequence
        return json.dumps(doc, sort_keys=True).encode()


def parse_spiffe_bundle(trust_domain: TrustDomain, data: bytes) -> SpiffeBundle:
    """Parse a SPIFFE bundle (JWKS with ``use`` per key), consuming per X509-SVID §6.2.

    x509-svid entries with a missing or empty ``x5c`` are skipped and only
    the first ``x5c`` certificate counts; JWKs with an unknown ``use`` or
    ``kty`` are skipped. A jwt-svid entry without ``kid`` is an error (the
    spec requires it and the key could never be selected).

    Raises:
        InvalidBundleError: malformed JSON or a malformed entry that is not skippable.
    """
    doc = _load_json(trust_domain, data)
    authorities: list[bytes] = []
    jwt_keys: dict[str, JsonObject] = {}
    for i, jwk in enumerate(_keys_list(trust_domain, doc)):
        use = jwk.get("use")
        if use == USE_X509:
            der = _first_x5c(trust_domain, jwk, i)
            if der is not None:
                authorities.append(der)
        elif use == USE_JWT and jwk.get("kty") in _KNOWN_KTY:
            _add_jwt_key(trust_domain, jwt_keys, jwk, i)
    return SpiffeBundle(trust_domain=trust_domain,
                        x509=X509Bundle(trust_domain=trust_domain, authorities=tuple(authorities)),
                        jwt=JwtBundle(trust_domain=trust_domain, keys=jwt_keys),
                        refresh_hint=_optional_count(trust_domain, doc, "spiffe_refresh_hint"),
                        sequence=_optional_count(trust_domain, doc, "spiffe_sequence"))


def _first_x5c(trust_domain: TrustDomain, jwk: JsonObject, index: int) -> bytes | None:
    x5c = jwk.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        return None
    if not isinstance(x5c[0], str):
        raise InvalidBundleError(f"{trust_domain}: key {index}: x5c[0] is not a string")
    try:
        # RFC 7517 §4.7: x5c is standard base64 (not base64url).
        return base64.b64decode(x5c[0], validate=True)
    except ValueError:
        raise InvalidBundleError(f"{trust_domain}: key {index}: x5c[0] is not base64") from None


def _optional_count(trust_domain: TrustDomain, doc: JsonObject, name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidBundleError(f"{trust_domain}: {name} must be a non-negative integer, got {value!r}")
    return value


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> JsonObject:
    out: JsonObject = {}
    for key, value in pairs:
        if key in out:
            raise InvalidBundleError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _load_json(trust_domain: TrustDomain, data: bytes) -> JsonObject:
    try:
        doc = json.loads(data, object_pairs_hook=_reject_duplicates)
    except InvalidBundleError as exc:
        raise InvalidBundleError(f"{trust_domain}: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBundleError(f"{trust_domain}: bundle is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidBundleError(f"{trust_domain}: bundle must be a JSON object")
    return doc


def _keys_list(trust_domain: TrustDomain, doc: JsonObject) -> list[JsonObject]:
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise InvalidBundleError(f"{trust_domain}: bundle must have a 'keys' array")
    for i, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise InvalidBundleError(f"{trust_domain}: key {i} is not a JSON object")
    return keys


def jwk_params(public_key: object) -> JsonObject:
    """The RFC 7517 public parameters (kty, n/e or crv/x/y) of a public key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(public_key, as_dict=True))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return dict(ECAlgorithm.to_jwk(public_key, as_dict=True))
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return dict(OKPAlgorithm.to_jwk(public_key, as_dict=True))
    raise InvalidBundleError(f"unsupported public key type {type(public_key).__name__}")


B = TypeVar("B", X509Bundle, JwtBundle)


class _BundleSet(Mapping[TrustDomain, B], Generic[B]):
    """An immutable map trust domain -> bundle; never merges trust domains."""

    __slots__ = ("_bundles",)
    _bundles: Mapping[TrustDomain, B]

    def __init__(self, bundles: Iterable[B] = ()) -> None:
        table: dict[TrustDomain, B] = {}
        for bundle in bundles:
            if bundle.trust_domain in table:
                raise InvalidBundleError(f"two bundles for trust domain {bundle.trust_domain}")
            table[bundle.trust_domain] = bundle
        self._bundles = MappingProxyType(table)

    def __getitem__(self, trust_domain: TrustDomain) -> B:
        return self._bundles[trust_domain]

    def __iter__(self) -> Iterator[TrustDomain]:
        return iter(self._bundles)

    def __len__(self) -> int:
        return len(self._bundles)

    @property
    def trust_domains(self) -> frozenset[TrustDomain]:
        """The trust domains this set has a bundle for."""
        return frozenset(self._bundles)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(td.name for td in self._bundles)})"


class X509BundleSet(_BundleSet[X509Bundle]):
    """X.509 bundles by trust domain (ours and federated ones)."""

    __slots__ = ()

    def der_map(self) -> dict[str, tuple[bytes, ...]]:
        """``{trust domain name: authorities DER}``, the shape the TLS engines take."""
        return {td.name: b.authorities for td, b in self.items()}


class JwtBundleSet(_BundleSet[JwtBundle]):
    """JWT bundles by trust domain."""

    __slots__ = ()
