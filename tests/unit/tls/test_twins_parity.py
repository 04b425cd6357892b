"""Parity: both engines give the same answer, or the same reason, over one table of chains and IDs.

tests/unit/spiffe checks each rule against its expected reason; this table
checks the engines against each other, including cases no rule test names
(forged signatures, intermediates out of order, chains that include the root).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import pki

from proxy import _fastpath  # type: ignore[attr-defined]
from proxy.errors import InvalidSpiffeIdError, VerificationError
from proxy.tls import engine_py

NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py
HOUR = dt.timedelta(hours=1)


def _outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except VerificationError as exc:
        return ("rejected", exc.reason)
    except InvalidSpiffeIdError as exc:
        return ("invalid", exc.rule)


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    root = pki.make_ca("example.org")
    inter = pki.make_ca("example.org", parent=root)
    inter2 = pki.make_ca("example.org", parent=inter)
    other = pki.make_ca("other.org")
    rogue = pki.make_ca("example.org")
    expired_inter = pki.make_ca("example.org", parent=root, not_before=pki._now() - 3 * HOUR, lifetime=HOUR)
    not_signing = pki.make_ca("example.org", parent=root, key_cert_sign=False)
    return dict(root=root, inter=inter, inter2=inter2, other=other, rogue=rogue, expired_inter=expired_inter,
                not_signing=not_signing, bundles={"example.org": [root.der], "other.org": [other.der]})


CHAINS: dict[str, Callable[[dict[str, Any]], list[bytes]]] = {
    "valid_root_signed": lambda w: pki.make_svid(w["root"]).chain_der,
    "valid_two_intermediates": lambda w: pki.make_svid(w["inter2"]).chain_der,
    "valid_with_root_appended": lambda w: [*pki.make_svid(w["inter"]).chain_der, w["root"].der],
    "intermediates_out_of_order": lambda w: (lambda c: [c[0], c[2], c[1]])(pki.make_svid(w["inter2"]).chain_der),
    "missing_intermediate": lambda w: pki.make_svid(w["inter"]).chain_der[:1],
    "rogue_root": lambda w: pki.make_svid(w["rogue"]).chain_der,
    "forged_signature": lambda w: pki.make_svid(w["root"], signer=w["rogue"]).chain_der,
    "other_td_signed_by_example_root": lambda w: pki.make_svid(w["root"], uris=["spiffe://other.org/x"]).chain_der,
    "other_td_valid": lambda w: pki.make_svid(w["other"], "/svc").chain_der,
    "unknown_td": lambda w: pki.make_svid(pki.make_ca("nowhere.test")).chain_der,
    "expired_leaf": lambda w: pki.make_svid(w["root"], not_before=pki._now() - 3 * HOUR, lifetime=HOUR).chain_der,
    "future_leaf": lambda w: pki.make_svid(w["root"], not_before=pki._now() + HOUR).chain_der,
    "expired_leaf_and_rogue_root": lambda w: pki.make_svid(w["rogue"], not_before=pki._now() - 3 * HOUR,
                                                           lifetime=HOUR).chain_der,
    "expired_intermediate": lambda w: pki.make_svid(w["expired_inter"]).chain_der,
    "intermediate_without_key_cert_sign": lambda w: pki.make_svid(w["not_signing"]).chain_der,
    "no_uri_san": lambda w: pki.make_svid(w["root"], None, dns_names=["x.example.org"]).chain_der,
    "two_uri_sans": lambda w: pki.make_svid(w["root"], uris=["spiffe://example.org/a", "spiffe://example.org/b"]).chain_der,
    "uri_and_dns_sans": lambda w: pki.make_svid(w["root"], dns_names=["x.example.org"]).chain_der,
    "uppercase_td": lambda w: pki.make_svid(w["root"], uris=["spiffe://EXAMPLE.org/a"]).chain_der,
    "not_spiffe_scheme": lambda w: pki.make_svid(w["root"], uris=["https://example.org/a"]).chain_der,
    "trailing_slash": lambda w: pki.make_svid(w["root"], uris=["spiffe://example.org/a/"]).chain_der,
    "root_path": lambda w: pki.make_svid(w["root"], "").chain_der,
    "ca_leaf": lambda w: pki.make_svid(w["root"], is_ca=True).chain_der,
    "key_cert_sign_leaf": lambda w: pki.make_svid(w["root"], key_cert_sign=True).chain_der,
    "crl_sign_leaf": lambda w: pki.make_svid(w["root"], crl_sign=True).chain_der,
    "no_digital_signature": lambda w: pki.make_svid(w["root"], digital_signature=False).chain_der,
    "no_key_usage": lambda w: pki.make_svid(w["root"], no_key_usage=True).chain_der,
    "server_auth_only": lambda w: pki.make_svid(w["root"], eku=[ExtendedKeyUsageOID.SERVER_AUTH]).chain_der,
    "client_auth_only": lambda w: pki.make_svid(w["root"], eku=[ExtendedKeyUsageOID.CLIENT_AUTH]).chain_der,
    "no_eku": lambda w: pki.make_svid(w["root"], no_eku=True).chain_der,
    "rsa_chain": lambda w: pki.make_svid(w["root"], key_kind="rsa").chain_der,
    "garbage_leaf": lambda w: [b"\x30\x03\x02\x01\x00"],
    "garbage_intermediate": lambda w: [pki.make_svid(w["inter"]).chain_der[0], b"not a certificate"],
    "empty_chain": lambda w: [],
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_verify_x509_svid_chain_agrees(world, case) -> None:
    chain = CHAINS[case](world)
    compiled = _outcome(_fastpath.verify_x509_svid_chain, chain, world["bundles"], NOW)
    reference = _outcome(engine_py.verify_x509_svid_chain, chain, world["bundles"], NOW)
    assert compiled == reference


def test_verify_defaults_now_to_the_current_time(world) -> None:
    chain = pki.make_svid(world["root"]).chain_der
    assert _fastpath.verify_x509_svid_chain(chain, world["bundles"]) == \
        engine_py.verify_x509_svid_chain(chain, world["bundles"]) == "spiffe://example.org/workload"


def test_verify_uses_the_given_time(world) -> None:
    chain = pki.make_svid(world["root"]).chain_der
    later = NOW + 2 * 3600
    assert _outcome(_fastpath.verify_x509_svid_chain, chain, world["bundles"], later) == \
        _outcome(engine_py.verify_x509_svid_chain, chain, world["bundles"], later)


@pytest.mark.parametrize("case", ["valid_root_signed", "no_uri_san", "two_uri_sans", "uppercase_td", "root_path",
                                  "not_spiffe_scheme", "garbage_leaf", "uri_and_dns_sans"])
def test_spiffe_id_from_der_agrees(world, case) -> None:
    der = CHAINS[case](world)[0]
    assert _outcome(_fastpath.spiffe_id_from_der, der) == _outcome(engine_py.spiffe_id_from_der, der)


@pytest.mark.parametrize("value", [
    "spiffe://example.org/ns/prod/sa/web", "spiffe://example.org", "spiffe://example.org/", "spiffe://",
    "", "SPIFFE://example.org/a", "spiffe://Example.org/a", "spiffe://example.org:443/a", "spiffe://u@example.org/a",
    "spiffe://example.org/a//b", "spiffe://example.org/a/./b", "spiffe://example.org/..", "spiffe://example.org/a%20b",
    "spiffe://example.org/a?x=1", "spiffe://example.org/a#f", "spiffe://exa mple.org/a", "spiffe://example.org/é",
    "spiffe://" + "a" * 256 + "/x", "spiffe://example.org/" + "a" * 2040, "spiffe://1.2.3.4/a", "spiffe://[::1]/a",
    "spiffe://example.org/\ud800",
])
def test_parse_spiffe_id_agrees(value: str) -> None:
    assert _outcome(_fastpath.parse_spiffe_id, value) == _outcome(engine_py.parse_spiffe_id, value)
