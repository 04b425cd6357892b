"""Peer X.509-SVID verification, one behaviour per test, on both twins.

Each certificate breaks exactly one rule (tests/support/pki.py), and the
expected ``VerifyFailure`` is the one the engine contract assigns to that
rule, in the contract's order (proxy/tls/engine.py, "Twins").
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import pki

from proxy.errors import VerificationError, VerifyFailure
from proxy.spiffe.bundle import X509Bundle, X509BundleSet
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.verify import verify_x509_svid

NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py


def _fails(impl, chain: list[bytes], bundles, reason: VerifyFailure, now: float | None = None) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        impl.verify_x509_svid_chain(chain, bundles, NOW if now is None else now)
    assert info.value.reason is reason, info.value.detail
    return info.value


def test_accepts_leaf_signed_by_root(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, "/ns/web")
    assert impl.verify_x509_svid_chain(leaf.chain_der, bundles, NOW) == "spiffe://foo.test/ns/web"


def test_accepts_leaf_through_intermediate(impl, foo_intermediate, bundles) -> None:
    leaf = pki.make_svid(foo_intermediate)
    assert len(leaf.chain_der) == 2
    assert impl.verify_x509_svid_chain(leaf.chain_der, bundles, NOW) == "spiffe://foo.test/workload"


def test_accepts_leaf_through_two_intermediates(impl, foo_intermediate, bundles) -> None:
    leaf = pki.make_svid(pki.make_ca("foo.test", parent=foo_intermediate))
    assert impl.verify_x509_svid_chain(leaf.chain_der, bundles, NOW) == "spiffe://foo.test/workload"


def test_accepts_leaf_without_eku(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, no_eku=True)
    assert impl.verify_x509_svid_chain(leaf.chain_der, bundles, NOW) == "spiffe://foo.test/workload"


@pytest.fixture(scope="module")
def rsa_chain() -> tuple[pki.Ca, pki.Leaf]:
    # RSA key generation is slow: one chain for both twins.
    root = pki.make_ca("rsa.test", key_kind="rsa")
    return root, pki.make_svid(root, key_kind="rsa")


def test_accepts_rsa_chain(impl, rsa_chain) -> None:
    root, leaf = rsa_chain
    assert impl.verify_x509_svid_chain(leaf.chain_der, {"rsa.test": [root.der]}, NOW) == "spiffe://rsa.test/workload"


def test_accepts_when_bundle_also_holds_a_retired_authority(impl, foo_root) -> None:
    old = pki.make_ca("foo.test")
    leaf = pki.make_svid(foo_root)
    assert impl.verify_x509_svid_chain(leaf.chain_der, {"foo.test": [old.der, foo_root.der]}, NOW)


def test_accepts_chain_that_includes_the_root(impl, foo_intermediate, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_intermediate)
    assert impl.verify_x509_svid_chain([*leaf.chain_der, foo_root.der], bundles, NOW) == "spiffe://foo.test/workload"


def test_rejects_empty_chain(impl, bundles) -> None:
    _fails(impl, [], bundles, VerifyFailure.NO_CERTIFICATE)


def test_rejects_leaf_that_is_not_der(impl, bundles) -> None:
    _fails(impl, [b"\x30\x03\x02\x01\x00"], bundles, VerifyFailure.BAD_CERTIFICATE)


def test_rejects_leaf_without_uri_san(impl, foo_root, bundles) -> None:
    _fails(impl, pki.make_svid(foo_root, None).chain_der, bundles, VerifyFailure.NO_URI_SAN)


def test_rejects_leaf_with_only_dns_san(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, None, dns_names=["web.foo.test"])
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.NO_URI_SAN)


def test_rejects_leaf_with_two_uri_sans(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, uris=["spiffe://foo.test/a", "spiffe://foo.test/b"])
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.MULTIPLE_URI_SANS)


@pytest.mark.parametrize("uri", ["spiffe://Foo.test/x", "https://foo.test/x", "spiffe://foo.test/a/",
                                 "spiffe://foo.test/a\n", "SPIFFE://foo.test/x", "spiffe://foo.test:443/x"])
def test_rejects_leaf_with_invalid_spiffe_id(impl, foo_root, bundles, uri: str) -> None:
    _fails(impl, pki.make_svid(foo_root, uris=[uri]).chain_der, bundles, VerifyFailure.INVALID_SPIFFE_ID)


def test_rejects_leaf_with_root_path(impl, foo_root, bundles) -> None:
    _fails(impl, pki.make_svid(foo_root, "").chain_der, bundles, VerifyFailure.ROOT_PATH)


def test_rejects_leaf_that_is_a_ca(impl, foo_root, bundles) -> None:
    _fails(impl, pki.make_svid(foo_root, is_ca=True).chain_der, bundles, VerifyFailure.LEAF_IS_CA)


def test_rejects_leaf_without_digital_signature(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, digital_signature=False)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.BAD_KEY_USAGE)


def test_rejects_leaf_with_key_encipherment_but_no_digital_signature(impl, foo_root, bundles) -> None:
    ku = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=True,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False)
    leaf = pki.make_svid_with_key_usage(foo_root, ku)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.BAD_KEY_USAGE)


def test_accepts_leaf_with_key_agreement_next_to_digital_signature(impl, foo_root, bundles) -> None:
    ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                       data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False)
    leaf = pki.make_svid_with_key_usage(foo_root, ku)
    assert impl.verify_x509_svid_chain(leaf.chain_der, bundles, NOW) == "spiffe://foo.test/workload"


def test_rejects_leaf_with_key_cert_sign(impl, foo_root, bundles) -> None:
    _fails(impl, pki.make_svid(foo_root, key_cert_sign=True).chain_der, bundles, VerifyFailure.BAD_KEY_USAGE)


def test_rejects_leaf_with_crl_sign(impl, foo_root, bundles) -> None:
    _fails(impl, pki.make_svid(foo_root, crl_sign=True).chain_der, bundles, VerifyFailure.BAD_KEY_USAGE)


def test_rejects_leaf_without_key_usage(impl, foo_root, bundles) -> None:
    _fails(impl, pki.make_svid(foo_root, no_key_usage=True).chain_der, bundles, VerifyFailure.BAD_KEY_USAGE)


@pytest.mark.parametrize("eku", [[ExtendedKeyUsageOID.SERVER_AUTH], [ExtendedKeyUsageOID.CLIENT_AUTH],
                                 [ExtendedKeyUsageOID.CODE_SIGNING]])
def test_rejects_leaf_whose_eku_lacks_server_or_client_auth(impl, foo_root, bundles, eku) -> None:
    _fails(impl, pki.make_svid(foo_root, eku=eku).chain_der, bundles, VerifyFailure.BAD_EXTENDED_KEY_USAGE)


def test_accepts_bundle_authority_that_is_not_self_signed(impl, foo_intermediate) -> None:
    # SPIRE with an upstream authority (upstream_bundle=false) publishes its
    # intermediate as the trust anchor; a bundle entry is an anchor, self-signed or not.
    leaf = pki.make_svid(foo_intermediate)
    assert impl.verify_x509_svid_chain(leaf.chain_der[:1], {"foo.test": [foo_intermediate.der]}, NOW)


def test_rejects_intermediate_that_is_not_der(impl, foo_intermediate, bundles) -> None:
    leaf = pki.make_svid(foo_intermediate)
    _fails(impl, [leaf.chain_der[0], b"junk"], bundles, VerifyFailure.BAD_CERTIFICATE)


def test_rejects_leaf_with_trailing_bytes(impl, foo_root, bundles) -> None:
    _fails(impl, [pki.make_svid(foo_root).chain_der[0] + b"\x00"], bundles, VerifyFailure.BAD_CERTIFICATE)


def test_rejects_bundle_authority_that_is_not_der(impl, foo_root) -> None:
    leaf = pki.make_svid(foo_root)
    _fails(impl, leaf.chain_der, {"foo.test": [b"junk"]}, VerifyFailure.BAD_CERTIFICATE)


def test_reports_unknown_trust_domain_before_a_bad_intermediate(impl, bundles) -> None:
    leaf = pki.make_svid(pki.make_ca("baz.test"))
    _fails(impl, [leaf.chain_der[0], b"junk"], bundles, VerifyFailure.UNKNOWN_TRUST_DOMAIN)


def test_rejects_leaf_from_trust_domain_without_bundle(impl, bundles) -> None:
    leaf = pki.make_svid(pki.make_ca("baz.test"))
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.UNKNOWN_TRUST_DOMAIN)


def test_rejects_leaf_signed_by_other_trust_domains_ca(impl, foo_root, bundles) -> None:
    # foo.test's CA mints an ID in bar.test; both bundles are loaded, and
    # only bar.test's authorities may vouch for bar.test (no merged pool).
    leaf = pki.make_svid(foo_root, "spiffe://bar.test/payments")
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_leaf_with_forged_signature(impl, foo_root, bar_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, signer=bar_root)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_chain_missing_its_intermediate(impl, foo_intermediate, bundles) -> None:
    leaf = pki.make_svid(foo_intermediate)
    _fails(impl, leaf.chain_der[:1], bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_trust_domain_with_empty_bundle(impl, foo_root) -> None:
    _fails(impl, pki.make_svid(foo_root).chain_der, {"foo.test": []}, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_intermediate_without_key_cert_sign(impl, foo_root, bundles) -> None:
    weak = pki.make_ca("foo.test", parent=foo_root, key_cert_sign=False)
    _fails(impl, pki.make_svid(weak).chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_leaf_used_as_intermediate(impl, foo_root, bundles) -> None:
    # A workload's (non-CA) key must not be able to mint SVIDs.
    workload = pki.make_svid(foo_root, "/rogue")
    as_ca = pki.Ca(trust_domain="foo.test", key=workload.key, cert=workload.cert, parent=foo_root)
    _fails(impl, pki.make_svid(as_ca, "/victim").chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_expired_intermediate(impl, foo_root, bundles) -> None:
    old = pki.make_ca("foo.test", parent=foo_root, lifetime=dt.timedelta(minutes=1),
                      not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    leaf = pki.make_svid(old)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_rejects_path_longer_than_path_length_allows(impl) -> None:
    root = pki.make_constrained_ca("len.test", path_length=0)
    inter = pki.make_constrained_ca("len.test", parent=root)
    _fails(impl, pki.make_svid(inter).chain_der, {"len.test": [root.der]}, VerifyFailure.UNTRUSTED_CHAIN)


def test_accepts_path_within_path_length(impl) -> None:
    root = pki.make_constrained_ca("len.test", path_length=1)
    inter = pki.make_constrained_ca("len.test", parent=root, path_length=0)
    assert impl.verify_x509_svid_chain(pki.make_svid(inter).chain_der, {"len.test": [root.der]}, NOW)


def test_rejects_leaf_outside_uri_name_constraints(impl) -> None:
    root = pki.make_constrained_ca("nc.test")
    inter = pki.make_constrained_ca("nc.test", parent=root, permitted_uri_hosts=["other.test"])
    _fails(impl, pki.make_svid(inter).chain_der, {"nc.test": [root.der]}, VerifyFailure.UNTRUSTED_CHAIN)


def test_accepts_leaf_inside_uri_name_constraints(impl) -> None:
    root = pki.make_constrained_ca("nc.test")
    inter = pki.make_constrained_ca("nc.test", parent=root, permitted_uri_hosts=["nc.test"])
    assert impl.verify_x509_svid_chain(pki.make_svid(inter).chain_der, {"nc.test": [root.der]}, NOW)


def test_rejects_leaf_with_unknown_critical_extension(impl, foo_root, bundles) -> None:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = pki.make_svid_with_extension(foo_root, ext, critical=True)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN)


def test_accepts_leaf_with_unknown_non_critical_extension(impl, foo_root, bundles) -> None:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = pki.make_svid_with_extension(foo_root, ext, critical=False)
    assert impl.verify_x509_svid_chain(leaf.chain_der, bundles, NOW) == "spiffe://foo.test/workload"


def test_rejects_expired_leaf(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root)
    later = leaf.cert.not_valid_after_utc.timestamp() + 60
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.EXPIRED, now=later)


def test_rejects_leaf_not_yet_valid(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root)
    earlier = leaf.cert.not_valid_before_utc.timestamp() - 60
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.NOT_YET_VALID, now=earlier)


def test_reports_leaf_profile_before_trust_domain(impl, bundles) -> None:
    leaf = pki.make_svid(pki.make_ca("baz.test"), is_ca=True)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.LEAF_IS_CA)


def test_reports_untrusted_chain_before_leaf_expiry(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, "spiffe://bar.test/x")
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.UNTRUSTED_CHAIN,
           now=leaf.cert.not_valid_after_utc.timestamp() + 60)


def test_reports_san_count_before_key_usage(impl, foo_root, bundles) -> None:
    leaf = pki.make_svid(foo_root, None, key_cert_sign=True)
    _fails(impl, leaf.chain_der, bundles, VerifyFailure.NO_URI_SAN)


# --- the typed entry point ----------------------------------------------------------


def test_typed_verification_uses_bundle_set(foo_root, bar_root) -> None:
    td = TrustDomain.parse("foo.test")
    bundles = X509BundleSet([X509Bundle(trust_domain=td, authorities=(foo_root.der,))])
    leaf = pki.make_svid(foo_root, "/web")
    assert verify_x509_svid(leaf.chain_der, bundles, NOW) == SpiffeId.parse("spiffe://foo.test/web")


def test_typed_verification_rejects_trust_domain_missing_from_set(foo_root) -> None:
    bundles = X509BundleSet([])
    with pytest.raises(VerificationError) as info:
        verify_x509_svid(pki.make_svid(foo_root).chain_der, bundles, NOW)
    assert info.value.reason is VerifyFailure.UNKNOWN_TRUST_DOMAIN
    assert "foo.test" in info.value.detail


@pytest.mark.timeout(10)
def test_rejects_quickly_a_chain_of_intermediates_that_all_sign_each_other(impl, foo_root, bundles) -> None:
    # Same name and key on every impostor CA: every ordering is a signature-valid
    # path, none reaches the real root; the search must stay bounded.
    key = pki.new_key()
    fakes = [pki.make_ca("foo.test", key=key, subject=foo_root.cert.subject) for _ in range(8)]
    impostors = [fake.der for fake in fakes]
    leaf = pki.make_svid(fakes[0])
    # A search that is not bounded would not end; the timeout marker catches that.
    _fails(impl, [leaf.chain_der[0], *impostors], bundles, VerifyFailure.UNTRUSTED_CHAIN)


# --- Key and signature strength (proxy/spiffe/strength.py) ------------------------------
# The full matrix of key kinds and digests, both twins against each other,
# is tests/unit/tls/test_twins_parity.py; these name the rule and the detail.


def test_rejects_rsa_1024_leaf_as_weak_key(impl, foo_root, bundles) -> None:
    from support import pki_cli

    leaf = pki_cli.make_svid(foo_root, key_kind="rsa1024")
    exc = _fails(impl, leaf.chain_der, bundles, VerifyFailure.WEAK_KEY, now=time.time())
    assert "leaf" in exc.detail and "1024 bits" in exc.detail


def test_rejects_explicit_curve_parameters_even_for_p256(impl, foo_root, bundles) -> None:
    from support import pki_cli

    leaf = pki_cli.make_svid(foo_root, key_kind="explicit_p256")
    exc = _fails(impl, leaf.chain_der, bundles, VerifyFailure.WEAK_KEY, now=time.time())
    assert "explicit" in exc.detail


def test_rejects_sha1_signed_intermediate_as_weak_signature(impl) -> None:
    from support import pki_cli

    root = pki.make_ca("foo.test", key_kind="rsa")
    inter = pki_cli.make_ca("foo.test", parent=root, digest="sha1")
    exc = _fails(impl, pki.make_svid(inter).chain_der, {"foo.test": [root.der]}, VerifyFailure.WEAK_SIGNATURE,
                 now=time.time())
    assert "chain certificate 1" in exc.detail and "SHA1" in exc.detail.upper()


def test_rejects_any_peer_of_a_trust_domain_whose_bundle_holds_a_weak_authority(impl, foo_root) -> None:
    from support import pki_cli

    weak = pki_cli.make_ca("foo.test", key_kind="p192")
    exc = _fails(impl, pki.make_svid(foo_root).chain_der, {"foo.test": [foo_root.der, weak.der]},
                 VerifyFailure.WEAK_KEY, now=time.time())
    assert "authority 1" in exc.detail


def test_accepts_authority_self_signed_with_sha1(impl) -> None:
    # Nothing relies on an anchor's self-signature (RFC 5280 §6.1), only on its key.
    from support import pki_cli

    root = pki_cli.make_ca("foo.test", key_kind="rsa", digest="sha1")
    leaf = pki.make_svid(root)
    assert impl.verify_x509_svid_chain(leaf.chain_der, {"foo.test": [root.der]}, time.time()) == \
        "spiffe://foo.test/workload"


@pytest.mark.parametrize("kind", ["p384", "p521", "ed25519"])
def test_accepts_strong_key_kinds(impl, kind) -> None:
    root = pki.make_ca("foo.test", key_kind=kind)
    leaf = pki.make_svid(root, key_kind=kind)
    assert impl.verify_x509_svid_chain(leaf.chain_der, {"foo.test": [root.der]}, NOW) == "spiffe://foo.test/workload"
