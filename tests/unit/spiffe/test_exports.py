"""The SPIFFE core's public names resolve and are the spec's names."""

from __future__ import annotations

import proxy.spiffe


def test_every_exported_name_resolves() -> None:
    for name in proxy.spiffe.__all__:
        assert getattr(proxy.spiffe, name) is not None, name


def test_exports_the_spec_value_types() -> None:
    expected = {"SpiffeId", "TrustDomain", "X509Svid", "JwtSvid", "X509Bundle", "JwtBundle", "X509BundleSet",
                "JwtBundleSet", "verify_x509_svid", "verify_x509_svid_chain"}
    assert expected <= set(proxy.spiffe.__all__)
