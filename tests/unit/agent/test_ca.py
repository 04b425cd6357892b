"""The agent's local CA: SVIDs the core accepts, rotation that never strands a peer."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from proxy.agent.ca import LocalCA
from proxy.agent.config import TrustDomainConfig
from proxy.errors import VerificationError
from proxy.spiffe.bundle import JwtBundle, JwtBundleSet, X509Bundle, X509BundleSet
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.jwt_svid import JwtSvid
from proxy.spiffe.svid import X509Svid
from proxy.spiffe.verify import verify_x509_svid

TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")
NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py


def _ca(**kw) -> LocalCA:
    return LocalCA.open(TrustDomainConfig(trust_domain=TD, **kw), NOW)


def _bundles(ca: LocalCA) -> X509BundleSet:
    return X509BundleSet([X509Bundle.from_der_blob(TD, ca.x509_bundle_der())])


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_issued_svid_follows_the_profile_and_verifies_against_the_bundle(key_type: str) -> None:
    ca = _ca(key_type=key_type)
    issued = ca.issue_x509(WEB, 300, ("web.example.org",), NOW)
    svid = X509Svid.parse([issued.chain_der], issued.key_der)
    assert svid.spiffe_id == WEB
    assert verify_x509_svid([issued.chain_der], _bundles(ca), NOW) == WEB
    leaf = x509.load_der_x509_certificate(issued.chain_der)
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).critical
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).critical
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["web.example.org"]
    assert leaf.not_valid_before_utc.timestamp() < NOW - 10  # backdated for clock skew
    assert issued.renew_at() == pytest.approx(NOW + 150, abs=1)


def test_svid_never_outlives_its_authority() -> None:
    ca = _ca(ca_ttl=60)
    issued = ca.issue_x509(WEB, 3600, (), NOW)
    assert issued.not_after <= ca.active.not_after


def test_rotation_publishes_next_authority_before_it_signs_and_retires_old_after_its_svids_expire() -> None:
    ca = _ca(ca_ttl=60)
    first = ca.active
    before = ca.issue_x509(WEB, 50, (), NOW)  # expires at NOW+50
    assert ca.tick(NOW + 31)  # half-life: the next authority is published...
    assert len(ca.authorities) == 2 and ca.active is first  # ...but the first still signs
    ca.tick(NOW + 41)  # two-thirds: the next one signs
    assert ca.active is not first and first in ca.authorities
    during = ca.issue_x509(WEB, 20, (), NOW + 41)
    bundles = _bundles(ca)
    assert verify_x509_svid([before.chain_der], bundles, NOW + 45) == WEB  # old SVIDs still verify
    assert verify_x509_svid([during.chain_der], bundles, NOW + 45) == WEB
    assert ca.next_event() == pytest.approx(NOW + 50, abs=1)  # the agent wakes to retire it
    assert ca.tick(NOW + 51)  # the first authority's last SVID expired: retired
    assert first not in ca.authorities
    with pytest.raises(VerificationError):
        verify_x509_svid([before.chain_der], _bundles(ca), NOW + 45)


def test_late_restart_publishes_the_next_authority_before_it_signs(tmp_path: Path) -> None:
    # The agent was down across the 2/3 point (NOW+40) of its only authority. The next
    # one is prepared only now: it must be published for the usual prepare-to-activate
    # gap (1/6 of the lifetime, 10s) before it signs, or peers holding the bundle from
    # before the restart reject every SVID issued after it.
    config = TrustDomainConfig(trust_domain=TD, ca_ttl=60, ca_dir=tmp_path)
    old_bundle = _bundles(LocalCA.open(config, NOW))
    late = LocalCA.open(config, NOW + 45)
    assert len(late.authorities) == 2
    issued = late.issue_x509(WEB, 5, (), NOW + 45)
    assert verify_x509_svid([issued.chain_der], old_bundle, NOW + 46) == WEB
    assert late.next_event() == pytest.approx(NOW + 55, abs=1)
    late.tick(NOW + 56)
    assert late.active is late.authorities[-1]
    assert late.issue_x509(WEB, 5, (), NOW + 56).not_after <= late.authorities[-1].not_after


def test_restart_long_after_the_next_authority_was_prepared_keeps_it_active(tmp_path: Path) -> None:
    config = TrustDomainConfig(trust_domain=TD, ca_ttl=60, ca_dir=tmp_path)
    ca = LocalCA.open(config, NOW)
    ca.tick(NOW + 31)  # the next authority is prepared and published before the restart
    restarted = LocalCA.open(config, NOW + 45)
    assert len(restarted.authorities) == 2 and restarted.active.kid == ca.authorities[-1].kid


def test_a_late_next_authority_activates_by_the_previous_ones_expiry_at_the_latest(tmp_path: Path) -> None:
    config = TrustDomainConfig(trust_domain=TD, ca_ttl=60, ca_dir=tmp_path)
    LocalCA.open(config, NOW)
    late = LocalCA.open(config, NOW + 57)  # 3s left on the old authority
    assert late.active is late.authorities[0]
    assert late.next_event() == pytest.approx(late.authorities[0].not_after, abs=0.01)
    late.tick(late.authorities[0].not_after)
    assert late.active is late.authorities[-1]


def test_jwt_svid_verifies_with_the_published_jwks() -> None:
    ca = _ca()
    token, exp = ca.mint_jwt(WEB, ["svc"], 300, NOW)
    jwks = json.loads(ca.jwks())
    assert all(k["use"] == "jwt-svid" and k["kid"] for k in jwks["keys"])
    bundles = JwtBundleSet([JwtBundle.from_jwks(TD, ca.jwks())])
    svid = JwtSvid.parse_and_validate(token, bundles, "svc", NOW)
    assert svid.spiffe_id == WEB and svid.expiry == exp


def test_jwt_svid_never_outlives_its_authority_and_keeps_it_published_until_it_expires() -> None:
    ca = _ca(ca_ttl=60)
    authority = ca.active
    token, exp = ca.mint_jwt(WEB, ["svc"], 3600, NOW)
    svid = JwtSvid.parse_insecure(token)
    assert svid.expiry == exp == int(authority.not_after)
    assert svid.claims["iat"] == int(NOW) and svid.audience == ("svc",)
    assert authority.last_expiry == exp


def test_ca_dir_keeps_authorities_0600_across_restarts(tmp_path: Path) -> None:
    ca = _ca(ca_dir=tmp_path)
    files = list((tmp_path / "example.org").iterdir())
    assert len(files) == 1 and stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "example.org").st_mode) == 0o700
    again = _ca(ca_dir=tmp_path)
    assert again.x509_bundle_der() == ca.x509_bundle_der()
    token, _ = again.mint_jwt(WEB, ["svc"], 60, NOW)
    assert JwtSvid.parse_and_validate(token, JwtBundleSet([JwtBundle.from_jwks(TD, ca.jwks())]), "svc", NOW)


def test_ca_dir_save_crash_mid_write_keeps_the_old_authority_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = _ca(ca_dir=tmp_path)
    (path,) = list((tmp_path / "example.org").iterdir())
    before = path.read_bytes()

    real_fdopen = os.fdopen

    class _Crashing:
        def __init__(self, f) -> None:
            self._f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._f.close()

        def write(self, data: bytes) -> int:
            self._f.write(data[:10])
            self._f.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self._f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: _Crashing(real_fdopen(fd, *a, **kw)))
    with pytest.raises(OSError):
        ca._save(ca.authorities[0])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in (tmp_path / "example.org").iterdir()] == [path.name]
    again = _ca(ca_dir=tmp_path)
    assert again.x509_bundle_der() == ca.x509_bundle_der()
