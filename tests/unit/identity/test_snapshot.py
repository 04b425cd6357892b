"""Snapshots and Workload API updates: full-state semantics, SVID choice, TLS material."""

from __future__ import annotations

import pytest
from support import pki
from support.grpcio_workload_server import x509_response

from proxy.errors import InvalidSvidError, NoIdentityError
from proxy.identity import messages
from proxy.identity.snapshot import IdentitySnapshot, authorities_summary, select_svid
from proxy.spiffe.id import TrustDomain


def test_update_holds_own_and_federated_bundles(ca, fed_ca) -> None:
    leaf = pki.make_svid(ca, "/web")
    context = messages.x509_context(x509_response([(leaf, ca)], {"partner.test": [fed_ca]}))
    assert context.default_svid is not None and str(context.default_svid.spiffe_id) == "spiffe://example.org/web"
    assert set(context.bundles) == {TrustDomain(name="example.org"), TrustDomain(name="partner.test")}


def test_federated_bundle_missing_from_next_update_is_withdrawn(ca, fed_ca) -> None:
    leaf = pki.make_svid(ca, "/web")
    first = messages.x509_context(x509_response([(leaf, ca)], {"partner.test": [fed_ca]}))
    second = messages.x509_context(x509_response([(leaf, ca)]))
    assert TrustDomain(name="partner.test") in first.bundles
    assert TrustDomain(name="partner.test") not in second.bundles


def test_update_without_svids_is_redacted(ca, fed_ca) -> None:
    context = messages.x509_context(x509_response([], {"partner.test": [fed_ca]}))
    assert context.redacted and context.default_svid is None
    with pytest.raises(NoIdentityError, match="redacted"):
        IdentitySnapshot.from_context(context)


def test_duplicate_hint_keeps_the_first_svid(ca) -> None:
    a, b, c = (pki.make_svid(ca, p) for p in ("/a", "/b", "/c"))
    context = messages.x509_context(x509_response([(a, ca), (b, ca), (c, ca)], hints=["x", "x", "y"]))
    assert [str(s.spiffe_id) for s in context.svids] == ["spiffe://example.org/a", "spiffe://example.org/c"]


def test_svid_chosen_by_hint_or_id(ca) -> None:
    a, b = pki.make_svid(ca, "/a"), pki.make_svid(ca, "/b")
    context = messages.x509_context(x509_response([(a, ca), (b, ca)], hints=["internal", "external"]))
    assert str(select_svid(context.svids, "external").spiffe_id) == "spiffe://example.org/b"
    assert str(select_svid(context.svids, "spiffe://example.org/a").hint) == "internal"
    with pytest.raises(NoIdentityError, match="offered: spiffe://example.org/a"):
        select_svid(context.svids, "nope")


def test_message_naming_another_id_than_its_certificate_is_refused(ca) -> None:
    response = x509_response([(pki.make_svid(ca, "/web"), ca)])
    response.svids[0].spiffe_id = "spiffe://example.org/admin"
    with pytest.raises(InvalidSvidError, match="certificate is spiffe://example.org/web"):
        messages.x509_context(response)


def test_ca_certificate_as_svid_is_refused(ca) -> None:
    response = x509_response([(pki.make_svid(ca, "/web", is_ca=True), ca)])
    with pytest.raises(InvalidSvidError):
        messages.x509_context(response)


def test_tls_material_keys_bundles_by_name_without_scheme(make_snapshot, ca, fed_ca) -> None:
    snap = make_snapshot().with_generation(7)
    material = snap.to_tls_material()
    assert material.spiffe_id == "spiffe://example.org/web" and material.generation == 7
    assert dict(material.bundles) == {"example.org": (ca.der,), "partner.test": (fed_ca.der,)}
    assert material.chain_der == snap.svid.chain_der and material.not_after == snap.not_after
    assert authorities_summary(snap.bundles) == {"example.org": 1, "partner.test": 1}
    assert snap.trust_domains == ("example.org", "partner.test")


def test_intermediate_chain_is_kept_leaf_first(ca) -> None:
    inter = pki.make_ca("example.org", parent=ca)
    leaf = pki.make_svid(inter, "/deep")
    context = messages.x509_context(x509_response([(leaf, inter)]))
    svid = context.svids[0]
    assert len(svid.chain_der) == 2 and context.bundles[TrustDomain(name="example.org")].authorities == (ca.der,)
