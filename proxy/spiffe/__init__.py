"""The SPIFFE core: IDs, SVIDs, bundles and peer verification, sans-IO.

Nothing here opens a socket or reads the clock: time comes in as ``now``
(Unix seconds), so every rule is testable with fixed certificates.
"""

from proxy.spiffe.bundle import (
    JwtBundle,
    JwtBundleSet,
    SpiffeBundle,
    X509Bundle,
    X509BundleSet,
    parse_spiffe_bundle,
)
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.jwt_svid import JwtSvid, mint_jwt_svid, public_jwk
from proxy.spiffe.svid import X509Svid, split_der_certificates, spiffe_id_from_certificate, spiffe_id_from_der
from proxy.spiffe.verify import verify_x509_svid, verify_x509_svid_chain

__all__ = [
    "JwtBundle",
    "JwtBundleSet",
    "JwtSvid",
    "SpiffeBundle",
    "SpiffeId",
    "TrustDomain",
    "X509Bundle",
    "X509BundleSet",
    "X509Svid",
    "mint_jwt_svid",
    "parse_spiffe_bundle",
    "public_jwk",
    "spiffe_id_from_certificate",
    "spiffe_id_from_der",
    "split_der_certificates",
    "verify_x509_svid",
    "verify_x509_svid_chain",
]
