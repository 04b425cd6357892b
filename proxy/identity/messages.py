"""Workload API messages -> SPIFFE values (pure; no I/O, no clock).

Each response is the full state (SPIFFE Workload API spec): a value is
built from one message alone, never merged with an earlier one, so a
federated bundle missing from an update is withdrawn and an update with no
SVID redacts them. Hints are unique per response; on a duplicate the
first SVID wins, as the spec says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from proxy.errors import InvalidBundleError, InvalidSvidError, VerificationError
from proxy.identity.snapshot import X509Context
from proxy.spiffe.bundle import JwtBundle, JwtBundleSet, X509Bundle, X509BundleSet
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.jwt_svid import JwtSvid
from proxy.spiffe.svid import X509Svid, split_der_certificates
from proxy.workload_api import workload_pb2 as pb

#: Hints longer than this are not supported (SPIFFE Workload API spec).
MAX_HINT_BYTES = 1024


def _svid_from_message(message: pb.X509SVID) -> X509Svid:
    if len(message.hint.encode()) > MAX_HINT_BYTES:
        raise InvalidSvidError(f"hint longer than {MAX_HINT_BYTES} bytes", message.spiffe_id or None)
    try:
        chain = split_der_certificates(message.x509_svid)
    except InvalidBundleError as exc:
        raise InvalidSvidError(f"x509_svid is not a DER chain: {exc}", message.spiffe_id or None) from None
    svid = X509Svid.parse(chain, message.x509_svid_key, message.hint)
    if message.spiffe_id and message.spiffe_id != str(svid.spiffe_id):
        raise InvalidSvidError(f"the message names {message.spiffe_id!r} but the certificate is "
                               f"{svid.spiffe_id}", message.spiffe_id)
    return svid


def _trust_domain_key(key: str) -> TrustDomain:
    return TrustDomain.parse(key)


def x509_context(response: pb.X509SVIDResponse) -> X509Context:
    """An FetchX509SVID response as an X509Context.

    Raises:
        InvalidSvidError: an SVID breaks the X509-SVID profile.
        InvalidBundleError: a bundle is malformed.
        InvalidSpiffeIdError: a bundle key is not a trust domain ID.
    """
    svids: list[X509Svid] = []
    hints: set[str] = set()
    bundles: dict[TrustDomain, X509Bundle] = {}
    for message in response.svids:
        if message.hint and message.hint in hints:
            continue
        hints.add(message.hint)
        svid = _svid_from_message(message)
        svids.append(svid)
        td = svid.spiffe_id.trust_domain
        if td not in bundles and message.bundle:
            bundles[td] = X509Bundle.from_der_blob(td, message.bundle)
    for key, blob in response.federated_bundles.items():
        td = _trust_domain_key(key)
        if td not in bundles:
            bundles[td] = X509Bundle.from_der_blob(td, blob)
    return X509Context(svids=tuple(svids), bundles=X509BundleSet(bundles.values()),
                       crl=tuple(bytes(c) for c in response.crl))


def x509_bundle_set(response: pb.X509BundlesResponse) -> X509BundleSet:
    """A FetchX509Bundles response as a bundle set (keys are ``spiffe://td``).

    Raises:
        InvalidBundleError: a bundle is malformed.
        InvalidSpiffeIdError: a key is not a trust domain ID.
    """
    return X509BundleSet(X509Bundle.from_der_blob(_trust_domain_key(k), v) for k, v in response.bundles.items())


def jwt_bundle_set(response: pb.JWTBundlesResponse) -> JwtBundleSet:
    """A FetchJWTBundles response as a JWT bundle set.

    Raises:
        InvalidBundleError: a JWKS is malformed.
        InvalidSpiffeIdError: a key is not a trust domain ID.
    """
    return JwtBundleSet(JwtBundle.from_jwks(_trust_domain_key(k), v) for k, v in response.bundles.items())


def jwt_svids(response: pb.JWTSVIDResponse) -> list[JwtSvid]:
    """The JWT-SVIDs of a FetchJWTSVID response, first hint wins.

    The agent signed them for us: ``JwtSvid.parse_insecure`` reads them
    without the signature (the receiver verifies) but with every header and
    claim rule, so a broken issuer is noticed here rather than by each peer.

    Raises:
        InvalidSvidError: a token is unreadable or breaks a JWT-SVID rule.
    """
    out: list[JwtSvid] = []
    hints: set[str] = set()
    for message in response.svids:
        if message.hint and message.hint in hints:
            continue
        hints.add(message.hint)
        try:
            out.append(JwtSvid.parse_insecure(message.svid, hint=message.hint))
        except VerificationError as exc:
            raise InvalidSvidError(f"JWT-SVID: {exc.detail}", message.spiffe_id or None) from None
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedJwtSvid:
    """What ValidateJWTSVID answered: the subject and the token's claims."""

    spiffe_id: SpiffeId
    claims: Mapping[str, Any] = field(default_factory=dict)


def validated_jwt_svid(response: pb.ValidateJWTSVIDResponse) -> ValidatedJwtSvid:
    """A ValidateJWTSVID response as a ValidatedJwtSvid.

    Raises:
        InvalidSpiffeIdError: the answer's spiffe_id is invalid.
    """
    from google.protobuf import json_format

    claims = json_format.MessageToDict(response.claims) if response.HasField("claims") else {}
    return ValidatedJwtSvid(spiffe_id=SpiffeId.parse(response.spiffe_id), claims=claims)
