"""The SAN extractor (both twins), our own X.509-SVID's profile, and DER splitting."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import pki

from proxy.errors import InvalidBundleError, InvalidSvidError, VerificationError, VerifyFailure
from proxy.spiffe.id import SpiffeId
from proxy.spiffe.svid import X509Svid, split_der_certificates

# --- one SAN extractor, two twins -----------------------------------------------


def _extract_fails(impl, der: bytes, reason: VerifyFailure) -> None:
    with pytest.raises(VerificationError) as info:
        impl.spiffe_id_from_der(der)
    assert info.value.reason is reason


def test_extracts_the_one_uri_san(impl, foo_root) -> None:
    assert impl.spiffe_id_from_der(pki.make_svid(foo_root, "/a/b").chain_der[0]) == "spiffe://foo.test/a/b"


def test_extracts_uri_san_next_to_dns_sans(impl, foo_root) -> None:
    leaf = pki.make_svid(foo_root, "/a", dns_names=["a.foo.test"])
    assert impl.spiffe_id_from_der(leaf.chain_der[0]) == "spiffe://foo.test/a"


def test_extractor_rejects_certificate_without_san(impl, foo_root) -> None:
    _extract_fails(impl, pki.make_svid(foo_root, None).chain_der[0], VerifyFailure.NO_URI_SAN)


def test_extractor_rejects_certificate_with_only_dns_san(impl, foo_root) -> None:
    _extract_fails(impl, pki.make_svid(foo_root, None, dns_names=["x.test"]).chain_der[0], VerifyFailure.NO_URI_SAN)


def test_extractor_rejects_two_uri_sans(impl, foo_root) -> None:
    leaf = pki.make_svid(foo_root, uris=["spiffe://foo.test/a", "spiffe://foo.test/a"])
    _extract_fails(impl, leaf.chain_der[0], VerifyFailure.MULTIPLE_URI_SANS)


@pytest.mark.parametrize("uri", ["spiffe://FOO.test/a", "http://foo.test/a", "spiffe://foo.test/a/../b", "spiffe://"])
def test_extractor_rejects_invalid_spiffe_id(impl, foo_root, uri: str) -> None:
    _extract_fails(impl, pki.make_svid(foo_root, uris=[uri]).chain_der[0], VerifyFailure.INVALID_SPIFFE_ID)


@pytest.mark.parametrize("der", [b"", b"not a certificate", b"\x30\x82\xff\xff\x00"])
def test_extractor_rejects_bytes_that_are_not_a_certificate(impl, der: bytes) -> None:
    _extract_fails(impl, der, VerifyFailure.BAD_CERTIFICATE)


def test_extractor_rejects_truncated_certificate(impl, foo_root) -> None:
    der = pki.make_svid(foo_root).chain_der[0]
    _extract_fails(impl, der[:-10], VerifyFailure.BAD_CERTIFICATE)


# --- our own X.509-SVID ---------------------------------------------------------


def _invalid(leaf: pki.Leaf, fragment: str, key_der: bytes | None = None) -> None:
    with pytest.raises(InvalidSvidError) as info:
        X509Svid.parse(leaf.chain_der, key_der if key_der is not None else leaf.key_der)
    assert fragment in info.value.rule


def test_parses_valid_svid_with_intermediate(foo_intermediate) -> None:
    leaf = pki.make_svid(foo_intermediate, "/web")
    svid = X509Svid.parse(leaf.chain_der, leaf.key_der, hint="internal")
    assert svid.spiffe_id == SpiffeId.parse("spiffe://foo.test/web")
    assert svid.chain_der == tuple(leaf.chain_der)
    assert svid.not_after == leaf.cert.not_valid_after_utc.timestamp()
    assert svid.not_before == leaf.cert.not_valid_before_utc.timestamp()
    assert svid.hint == "internal"
    assert svid.leaf == leaf.cert


def test_svid_rejects_empty_chain() -> None:
    with pytest.raises(InvalidSvidError, match="empty"):
        X509Svid.parse([], b"")


def test_svid_rejects_chain_that_is_not_der() -> None:
    with pytest.raises(InvalidSvidError, match="not DER"):
        X509Svid.parse([b"junk"], b"")


def test_svid_rejects_leaf_without_uri_san(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, None), "no URI SAN")


def test_svid_rejects_leaf_with_two_uri_sans(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, uris=["spiffe://foo.test/a", "spiffe://foo.test/b"]), "2 URI SANs")


def test_svid_rejects_root_path(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, ""), "no path")


def test_svid_rejects_leaf_that_is_a_ca(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, is_ca=True), "cA=true")


def test_svid_rejects_missing_key_usage(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, no_key_usage=True), "no key usage")


def test_svid_rejects_missing_digital_signature(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, digital_signature=False), "digitalSignature")


@pytest.mark.parametrize("flag", ["key_cert_sign", "crl_sign"])
def test_svid_rejects_leaf_with_signing_key_usage(foo_root, flag: str) -> None:
    _invalid(pki.make_svid(foo_root, **{flag: True}), "keyCertSign or cRLSign")


def test_svid_rejects_eku_without_client_auth(foo_root) -> None:
    _invalid(pki.make_svid(foo_root, eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "serverAuth and clientAuth")


def test_svid_rejects_intermediate_that_is_not_a_ca(foo_root) -> None:
    leaf = pki.make_svid(foo_root)
    other = pki.make_svid(foo_root, "/other")
    with pytest.raises(InvalidSvidError, match="chain certificate 1: .*cA=true"):
        X509Svid.parse([*leaf.chain_der, other.chain_der[0]], leaf.key_der)


def test_svid_rejects_intermediate_without_key_cert_sign(foo_root) -> None:
    weak = pki.make_ca("foo.test", parent=foo_root, key_cert_sign=False)
    _invalid(pki.make_svid(weak), "keyCertSign")


def test_svid_rejects_key_of_another_certificate(foo_root) -> None:
    leaf, other = pki.make_svid(foo_root), pki.make_svid(foo_root)
    _invalid(leaf, "does not match", key_der=other.key_der)


def test_svid_rejects_key_that_is_not_der(foo_root) -> None:
    _invalid(pki.make_svid(foo_root), "not DER PKCS#8", key_der=b"nope")


def test_svid_error_names_the_claimed_id(foo_root) -> None:
    with pytest.raises(InvalidSvidError) as info:
        leaf = pki.make_svid(foo_root, "/db", is_ca=True)
        X509Svid.parse(leaf.chain_der, leaf.key_der)
    assert info.value.spiffe_id == "spiffe://foo.test/db"
    assert "spiffe://foo.test/db" in str(info.value)


def test_svid_round_trips_through_pem(foo_intermediate, tmp_path) -> None:
    leaf = pki.make_svid(foo_intermediate, key_kind="ec")
    cert_path, key_path = leaf.write_pem(tmp_path)
    svid = X509Svid.from_pem(open(cert_path, "rb").read(), open(key_path, "rb").read())
    assert svid.chain_der == tuple(leaf.chain_der)
    chain_pem, key_pem = svid.to_pem()
    assert X509Svid.from_pem(chain_pem, key_pem) == svid


def test_svid_from_pem_rejects_unreadable_key(foo_root) -> None:
    leaf = pki.make_svid(foo_root)
    with pytest.raises(InvalidSvidError, match="private key PEM"):
        X509Svid.from_pem(pki.pem(leaf.cert), b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n")


# --- concatenated DER -----------------------------------------------------------


def test_splits_concatenated_der_certificates(foo_intermediate) -> None:
    leaf = pki.make_svid(foo_intermediate)
    blob = b"".join(leaf.chain_der)
    assert split_der_certificates(blob) == leaf.chain_der


def test_split_of_empty_blob_is_empty() -> None:
    assert split_der_certificates(b"") == []


@pytest.mark.parametrize("blob", [b"\x04\x01\x00", b"\x30", b"\x30\x05\x00", b"\x30\x80\x00\x00",
                                  b"\x30\x85\x00\x00\x00\x00\x01\x00", b"\x30\x82\x01"])
def test_split_rejects_garbage(blob: bytes) -> None:
    with pytest.raises(InvalidBundleError):
        split_der_certificates(blob)


def test_split_rejects_trailing_garbage(foo_root) -> None:
    with pytest.raises(InvalidBundleError, match="byte"):
        split_der_certificates(foo_root.der + b"\x00")


def test_svid_rejects_intermediate_whose_spiffe_id_has_a_path(foo_root) -> None:
    # A CA certificate names its trust domain, never a workload (X509-SVID §3.2).
    leaf = pki.make_svid(foo_root)
    bogus_ca = pki.make_svid(foo_root, "/ca", is_ca=True, key_cert_sign=True)
    with pytest.raises(InvalidSvidError, match="must not have a path"):
        X509Svid.parse([leaf.chain_der[0], bogus_ca.chain_der[0]], leaf.key_der)
