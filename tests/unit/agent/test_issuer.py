"""What the agent hands out for a set of matching entries (no sockets: time passed in)."""

from __future__ import annotations

import time

import pytest

from proxy.agent.config import TrustDomainConfig, agent_config
from proxy.agent.issuer import Issuer
from proxy.spiffe.id import TrustDomain
from proxy.workload_api.grpc import GrpcStatusError, StatusCode

NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py


def _issuer() -> Issuer:
    config = agent_config(
        socket_path="/tmp/unused.sock", x509_svid_ttl=60.0,
        trust_domains=(TrustDomainConfig(trust_domain=TrustDomain.parse("example.org")),
                       TrustDomainConfig(trust_domain=TrustDomain.parse("partner.test"))),
        entries=[{"spiffe_id": "spiffe://example.org/web", "selectors": ["unix:uid:1"], "hint": "web",
                  "federates_with": ["partner.test"]},
                 {"spiffe_id": "spiffe://example.org/admin", "selectors": ["unix:uid:1"]}])
    return Issuer(config, NOW)


def test_entries_share_one_svid_until_half_life_then_renew() -> None:
    issuer = _issuer()
    entries = list(issuer.config.entries)
    first = issuer.x509_state(entries, NOW)
    again = issuer.x509_state(entries, NOW + 10)
    assert again.serials == first.serials  # a reconnect does not mint new keys
    assert first.renew_at == pytest.approx(NOW + 30, abs=1)
    renewed = issuer.x509_state(entries, NOW + 31)
    assert set(renewed.serials).isdisjoint(first.serials)


def test_response_lists_entries_in_order_with_hints_and_federated_bundles() -> None:
    issuer = _issuer()
    resp = issuer.x509_state(list(issuer.config.entries), NOW).response
    assert [s.spiffe_id for s in resp.svids] == ["spiffe://example.org/web", "spiffe://example.org/admin"]
    assert resp.svids[0].hint == "web" and resp.svids[0].bundle
    assert list(resp.federated_bundles) == ["spiffe://partner.test"]
    assert sorted(issuer.x509_bundles(list(issuer.config.entries)).bundles) == [
        "spiffe://example.org", "spiffe://partner.test"]
    assert list(issuer.x509_bundles([issuer.config.entries[1]]).bundles) == ["spiffe://example.org"]


def test_jwt_minted_here_validates_and_foreign_trust_domains_are_refused() -> None:
    issuer = _issuer()
    web, admin = issuer.config.entries
    token = issuer.mint_jwt(web, ["svc"], NOW).svid
    sub, claims = issuer.validate_jwt(token, "svc", [web.spiffe_id.trust_domain], NOW)
    assert str(sub) == "spiffe://example.org/web" and claims["aud"] == "svc"
    with pytest.raises(GrpcStatusError) as err:
        issuer.validate_jwt(token, "svc", [TrustDomain.parse("partner.test")], NOW)
    assert err.value.status == StatusCode.INVALID_ARGUMENT and "example.org" in err.value.message
