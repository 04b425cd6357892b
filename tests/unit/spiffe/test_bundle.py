"""Trust bundles: the three encodings, per-trust-domain sets that never merge."""

from __future__ import annotations

import base64
import json

import pytest
from support import pki

from proxy.errors import InvalidBundleError
from proxy.spiffe.bundle import (
    JwtBundle,
    JwtBundleSet,
    SpiffeBundle,
    X509Bundle,
    X509BundleSet,
    parse_spiffe_bundle,
)
from proxy.spiffe.id import TrustDomain
from proxy.spiffe.jwt_svid import public_jwk

FOO = TrustDomain.parse("foo.test")
BAR = TrustDomain.parse("bar.test")


def _x5c(der: bytes) -> str:
    return base64.b64encode(der).decode()


def _doc(*keys: dict, **extra: object) -> bytes:
    return json.dumps({"keys": list(keys), **extra}).encode()


def test_x509_bundle_round_trips_der_blob(foo_root, bar_root) -> None:
    bundle = X509Bundle.from_der_blob(FOO, foo_root.der + bar_root.der)
    assert bundle.authorities == (foo_root.der, bar_root.der)
    assert bundle.to_der_blob() == foo_root.der + bar_root.der
    assert [c.subject for c in bundle.certificates()] == [foo_root.cert.subject, bar_root.cert.subject]


def test_x509_bundle_rejects_authority_that_is_not_a_certificate() -> None:
    with pytest.raises(InvalidBundleError, match="foo.test: authority 0"):
        X509Bundle.from_der_blob(FOO, b"\x30\x03\x02\x01\x00")


def test_x509_bundle_may_be_empty() -> None:
    assert X509Bundle.from_der_blob(FOO, b"").authorities == ()


def test_bundle_set_is_keyed_by_trust_domain(foo_root, bar_root) -> None:
    bundles = X509BundleSet([X509Bundle(trust_domain=FOO, authorities=(foo_root.der,)),
                             X509Bundle(trust_domain=BAR, authorities=(bar_root.der,))])
    assert bundles.trust_domains == frozenset({FOO, BAR})
    assert bundles.get(FOO).authorities == (foo_root.der,)
    assert bundles.get(TrustDomain.parse("baz.test")) is None
    assert bundles.der_map() == {"foo.test": (foo_root.der,), "bar.test": (bar_root.der,)}


def test_bundle_set_refuses_two_bundles_for_one_trust_domain(foo_root, bar_root) -> None:
    # Merging would let either CA set vouch for the trust domain: refuse instead.
    with pytest.raises(InvalidBundleError, match="two bundles for trust domain foo.test"):
        X509BundleSet([X509Bundle(trust_domain=FOO, authorities=(foo_root.der,)),
                       X509Bundle(trust_domain=FOO, authorities=(bar_root.der,))])


def test_bundle_set_is_immutable(foo_root) -> None:
    bundles = X509BundleSet([X509Bundle(trust_domain=FOO, authorities=(foo_root.der,))])
    with pytest.raises(TypeError):
        bundles[BAR] = bundles[FOO]  # type: ignore[index]


def test_jwt_bundle_round_trips_jwks() -> None:
    key = pki.new_key()
    jwks = json.dumps({"keys": [public_jwk(key.public_key(), "k1")]}).encode()
    bundle = JwtBundle.from_jwks(FOO, jwks)
    assert set(bundle.keys) == {"k1"}
    assert JwtBundle.from_jwks(FOO, bundle.to_jwks()) == bundle


def test_jwt_bundle_accepts_keys_without_use_as_spire_sends_them() -> None:
    jwk = public_jwk(pki.new_key().public_key(), "k1")
    del jwk["use"]
    assert set(JwtBundle.from_jwks(FOO, _doc(jwk)).keys) == {"k1"}


def test_jwt_bundle_ignores_keys_for_other_uses_and_unknown_types() -> None:
    good = public_jwk(pki.new_key().public_key(), "k1")
    other_use = dict(good, kid="k2", use="x509-svid")
    unknown_kty = {"kty": "oct", "kid": "k3", "k": "c2VjcmV0"}
    assert set(JwtBundle.from_jwks(FOO, _doc(good, other_use, unknown_kty)).keys) == {"k1"}


def test_jwt_bundle_rejects_key_without_kid() -> None:
    jwk = public_jwk(pki.new_key().public_key(), "k1")
    del jwk["kid"]
    with pytest.raises(InvalidBundleError, match="has no 'kid'"):
        JwtBundle.from_jwks(FOO, _doc(jwk))


def test_jwt_bundle_rejects_duplicate_kid() -> None:
    jwk = public_jwk(pki.new_key().public_key(), "k1")
    with pytest.raises(InvalidBundleError, match="duplicate JWT key ID 'k1'"):
        JwtBundle.from_jwks(FOO, _doc(jwk, jwk))


def test_jwt_bundle_keys_cannot_be_changed_through_the_callers_dict() -> None:
    keys = {"k1": public_jwk(pki.new_key().public_key(), "k1")}
    bundle = JwtBundle(trust_domain=FOO, keys=keys)
    keys["k2"] = keys["k1"]
    assert set(bundle.keys) == {"k1"}


@pytest.mark.parametrize("data", [b"not json", b"[]", b"{}", b'{"keys": {}}', b'{"keys": [1]}',
                                  b'{"keys": [], "keys": []}'])
def test_bundle_parsers_reject_malformed_documents(data: bytes) -> None:
    with pytest.raises(InvalidBundleError):
        JwtBundle.from_jwks(FOO, data)
    with pytest.raises(InvalidBundleError):
        parse_spiffe_bundle(FOO, data)


def test_spiffe_bundle_parses_both_kinds_of_keys(foo_root) -> None:
    jwt_key = public_jwk(pki.new_key().public_key(), "k1")
    data = _doc({"kty": "EC", "use": "x509-svid", "x5c": [_x5c(foo_root.der)]}, jwt_key,
                spiffe_refresh_hint=300, spiffe_sequence=7)
    bundle = parse_spiffe_bundle(FOO, data)
    assert bundle.x509.authorities == (foo_root.der,)
    assert set(bundle.jwt.keys) == {"k1"}
    assert (bundle.refresh_hint, bundle.sequence) == (300, 7)


def test_spiffe_bundle_skips_x509_entries_with_missing_or_empty_x5c() -> None:
    data = _doc({"kty": "EC", "use": "x509-svid"}, {"kty": "EC", "use": "x509-svid", "x5c": []})
    assert parse_spiffe_bundle(FOO, data).x509.authorities == ()


def test_spiffe_bundle_uses_only_the_first_x5c_certificate(foo_root, bar_root) -> None:
    data = _doc({"kty": "EC", "use": "x509-svid", "x5c": [_x5c(foo_root.der), _x5c(bar_root.der)]})
    assert parse_spiffe_bundle(FOO, data).x509.authorities == (foo_root.der,)


def test_spiffe_bundle_ignores_keys_with_unknown_or_missing_use(foo_root) -> None:
    data = _doc({"kty": "EC", "use": "wit-svid", "kid": "w"}, {"kty": "EC", "x5c": [_x5c(foo_root.der)]})
    bundle = parse_spiffe_bundle(FOO, data)
    assert bundle.x509.authorities == () and not bundle.jwt.keys


def test_spiffe_bundle_rejects_x5c_that_is_not_base64() -> None:
    with pytest.raises(InvalidBundleError, match="not base64"):
        parse_spiffe_bundle(FOO, _doc({"kty": "EC", "use": "x509-svid", "x5c": ["***"]}))


def test_spiffe_bundle_rejects_x5c_that_is_not_a_certificate() -> None:
    with pytest.raises(InvalidBundleError, match="not DER"):
        parse_spiffe_bundle(FOO, _doc({"kty": "EC", "use": "x509-svid", "x5c": [_x5c(b"\x30\x00")]}))


def test_spiffe_bundle_rejects_jwt_key_without_kid() -> None:
    jwk = public_jwk(pki.new_key().public_key(), "k1")
    del jwk["kid"]
    with pytest.raises(InvalidBundleError, match="no 'kid'"):
        parse_spiffe_bundle(FOO, _doc(jwk))


@pytest.mark.parametrize("hint", [-1, "300", True, 1.5])
def test_spiffe_bundle_rejects_bad_refresh_hint(hint: object) -> None:
    with pytest.raises(InvalidBundleError, match="spiffe_refresh_hint"):
        parse_spiffe_bundle(FOO, _doc(spiffe_refresh_hint=hint))


def test_spiffe_bundle_round_trips_json(foo_root) -> None:
    jwt_key = public_jwk(pki.new_key().public_key(), "k1")
    bundle = SpiffeBundle(trust_domain=FOO, x509=X509Bundle(trust_domain=FOO, authorities=(foo_root.der,)),
                          jwt=JwtBundle(trust_domain=FOO, keys={"k1": jwt_key}), refresh_hint=60, sequence=2)
    doc = json.loads(bundle.to_json())
    x509_entry = next(k for k in doc["keys"] if k["use"] == "x509-svid")
    assert "kid" not in x509_entry and x509_entry["kty"] == "EC"
    assert parse_spiffe_bundle(FOO, bundle.to_json()) == bundle
