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
from support.combos import fastpath, fastpath_available, requires_fastpath

from proxy.errors import InvalidSpiffeIdError, VerificationError
from proxy.tls import engine_py

#: Every test here compares the compiled engine with its twin: none means anything without it.
pytestmark = requires_fastpath
_fastpath: Any = fastpath() if fastpath_available() else None

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


# --- Key and signature strength (proxy/spiffe/strength.py) ----------------------------
#
# Every key kind and digest the two OpenSSLs here can make, as leaf, as
# intermediate and as authority, plus combinations that decide which failure
# comes first. Each case names the outcome it must have, and both engines
# must give it: a disagreement on any of them fails. Certificates minted by
# the openssl CLI start at the signing second, so these verify at the
# current time (now=None), not at the module's NOW.

WEAK_KEY, WEAK_SIG, OK = "weak_key", "weak_signature", "ok"
LEAF_KEYS = {"rsa512": WEAK_KEY, "rsa1024": WEAK_KEY, "rsa2048": OK, "rsa3072": OK, "rsa4096": OK,
             "p192": WEAK_KEY, "p224": WEAK_KEY, "p256": OK, "p384": OK, "p521": OK, "ed25519": OK,
             "explicit_p256": WEAK_KEY, "ed448": WEAK_KEY}
DIGESTS = {"md5": WEAK_SIG, "sha1": WEAK_SIG, "sha224": WEAK_SIG, "sha256": OK, "sha384": OK, "sha512": OK}


def _strength_cases() -> dict[str, tuple[Callable[[dict[str, Any]], tuple[list[bytes], dict[str, list[bytes]]]], str]]:
    from support import pki_cli as cli

    def under(root_key: str) -> Callable[[dict[str, Any]], dict[str, list[bytes]]]:
        return lambda w: {"example.org": [w[root_key].der]}

    cases: dict[str, tuple[Callable[..., Any], str]] = {}
    for kind, want in LEAF_KEYS.items():
        cases[f"leaf_key_{kind}"] = (lambda w, k=kind: (cli.make_svid(w["root"], key_kind=k).chain_der,
                                                        under("root")(w)), want)
        # An Ed448 CA's signature on the certificate below it is judged before the CA itself.
        want_ca = WEAK_SIG if kind == "ed448" else want
        cases[f"intermediate_key_{kind}"] = (
            lambda w, k=kind: (pki.make_svid(cli.make_ca("example.org", parent=w["root"], key_kind=k)).chain_der,
                               under("root")(w)), want_ca)
        cases[f"authority_key_{kind}"] = (
            lambda w, k=kind: (lambda r: (pki.make_svid(r).chain_der, {"example.org": [r.der]}))(
                cli.make_ca("example.org", key_kind=k)), want_ca)
    for digest, want in DIGESTS.items():
        cases[f"leaf_rsa_signed_{digest}"] = (lambda w, d=digest: (cli.make_svid(w["rsa_root"], digest=d).chain_der,
                                                                   under("rsa_root")(w)), want)
        cases[f"intermediate_rsa_signed_{digest}"] = (
            lambda w, d=digest: (pki.make_svid(cli.make_ca("example.org", parent=w["rsa_root"], digest=d)).chain_der,
                                 under("rsa_root")(w)), want)
        # An authority's self-signature is never judged: any digest is fine.
        cases[f"authority_self_signed_{digest}"] = (
            lambda w, d=digest: (lambda r: (pki.make_svid(r).chain_der, {"example.org": [r.der]}))(
                cli.make_ca("example.org", key_kind="rsa", digest=d)), OK)
    for digest in ("sha1", "sha224", "sha384"):
        cases[f"leaf_ecdsa_signed_{digest}"] = (lambda w, d=digest: (cli.make_svid(w["root"], digest=d).chain_der,
                                                                     under("root")(w)), DIGESTS[digest])
    cases.update(_order_cases(cli))
    return cases


def _order_cases(cli: Any) -> dict[str, tuple[Callable[..., Any], str]]:
    """Chains with more than one fault: the contract's order decides which one is reported."""
    def sha1_root(w: dict[str, Any]) -> tuple[list[bytes], dict[str, list[bytes]]]:
        root = cli.make_ca("example.org", key_kind="rsa", digest="sha1")
        return [*pki.make_svid(root).chain_der, root.der], {"example.org": [root.der]}

    return {
        "weak_leaf_signature_before_weak_intermediate_key": (lambda w: (
            cli.make_svid(cli.make_ca("example.org", parent=w["root"], key_kind="rsa1024"), digest="sha1").chain_der,
            {"example.org": [w["root"].der]}), WEAK_SIG),
        "weak_leaf_key_before_its_weak_signature": (lambda w: (
            cli.make_svid(w["rsa_root"], key_kind="rsa1024", digest="md5").chain_der,
            {"example.org": [w["rsa_root"].der]}), WEAK_KEY),
        "weak_intermediate_before_weak_authority": (lambda w: (lambda r: (
            pki.make_svid(cli.make_ca("example.org", parent=r, digest="sha1")).chain_der,
            {"example.org": [r.der]}))(cli.make_ca("example.org", key_kind="rsa1024")), WEAK_SIG),
        "weak_leaf_before_untrusted_chain": (lambda w: (cli.make_svid(w["rogue"], key_kind="p192").chain_der,
                                                        {"example.org": [w["root"].der]}), WEAK_KEY),
        "weak_leaf_before_expired_intermediate": (lambda w: (
            cli.make_svid(w["expired_inter"], key_kind="rsa1024").chain_der, {"example.org": [w["root"].der]}),
            WEAK_KEY),
        "unknown_trust_domain_before_weak_leaf": (lambda w: (
            cli.make_svid(pki.make_ca("nowhere.test"), key_kind="rsa1024").chain_der,
            {"example.org": [w["root"].der]}), "unknown_trust_domain"),
        "weak_unrelated_certificate_appended": (lambda w: (
            [*pki.make_svid(w["root"]).chain_der, cli.make_ca("junk.test", key_kind="rsa512").der],
            {"example.org": [w["root"].der]}), WEAK_KEY),
        "weak_unused_authority_in_bundle": (lambda w: (
            pki.make_svid(w["root"]).chain_der,
            {"example.org": [cli.make_ca("example.org", key_kind="p224").der, w["root"].der]}), WEAK_KEY),
        "sha1_self_signed_authority_sent_by_the_peer": (sha1_root, OK),
    }


STRENGTH_CASES = _strength_cases()


@pytest.fixture(scope="module")
def strength_world(world: dict[str, Any]) -> dict[str, Any]:
    return dict(world, rsa_root=pki.make_ca("example.org", key_kind="rsa"))


def _verdict(outcome: Any) -> str:
    return "ok" if outcome[0] == "ok" else outcome[1].value if outcome[0] == "rejected" else repr(outcome)


@pytest.mark.parametrize("case", sorted(STRENGTH_CASES))
def test_strength_verdicts_agree_and_are_the_policy(strength_world, case) -> None:
    make, want = STRENGTH_CASES[case]
    chain, bundles = make(strength_world)
    compiled = _outcome(_fastpath.verify_x509_svid_chain, chain, bundles, None)
    reference = _outcome(engine_py.verify_x509_svid_chain, chain, bundles, None)
    assert compiled == reference
    assert _verdict(compiled) == want, compiled


# Every combination of a weak or strong choice at each of the five places a
# chain can be weak (leaf key, leaf signature, intermediate key, its
# signature, authority key): both engines must report the first weak one in
# the contract's order (leaf key, leaf signature, intermediate key and
# signature, then the authority), or accept when none is.
# (Two choices per place keep it to 32 chains; the table above covers every kind.)
COMBO_LEAF_KEYS = {"p256": OK, "p224": WEAK_KEY}
COMBO_INTER_KEYS = {"rsa2048": OK, "explicit_p256": WEAK_KEY}
COMBO_DIGESTS = {"sha256": OK, "sha1": WEAK_SIG}
COMBO_ANCHORS = {"rsa2048": OK, "rsa1024": WEAK_KEY}
COMBOS = [(leaf, dl, inter, di, anchor) for leaf in COMBO_LEAF_KEYS for dl in COMBO_DIGESTS
          for inter in COMBO_INTER_KEYS for di in COMBO_DIGESTS for anchor in COMBO_ANCHORS]


@pytest.fixture(scope="module")
def combo_cas() -> dict[tuple[str, ...], Any]:
    """Authorities and intermediates, minted on first use and shared by the combinations."""
    return {}


def _combo_ca(cache: dict[tuple[str, ...], Any], *key: str) -> Any:
    from support import pki_cli as cli

    if key not in cache:
        if len(key) == 1:
            cache[key] = cli.make_ca("example.org", key_kind=key[0])
        else:
            anchor, inter, digest = key
            cache[key] = cli.make_ca("example.org", parent=_combo_ca(cache, anchor), key_kind=inter, digest=digest)
    return cache[key]


@pytest.mark.parametrize("leaf, leaf_digest, inter, inter_digest, anchor", COMBOS)
def test_every_weak_combination_reports_its_first_weakness_in_both_engines(combo_cas, leaf, leaf_digest, inter,
                                                                             inter_digest, anchor) -> None:
    from support import pki_cli as cli

    root = _combo_ca(combo_cas, anchor)
    chain = cli.make_svid(_combo_ca(combo_cas, anchor, inter, inter_digest), key_kind=leaf,
                          digest=leaf_digest).chain_der
    bundles = {"example.org": [root.der]}
    verdicts = [COMBO_LEAF_KEYS[leaf], COMBO_DIGESTS[leaf_digest], COMBO_INTER_KEYS[inter],
                COMBO_DIGESTS[inter_digest], COMBO_ANCHORS[anchor]]
    want = next((v for v in verdicts if v != OK), OK)
    compiled = _outcome(_fastpath.verify_x509_svid_chain, chain, bundles, None)
    reference = _outcome(engine_py.verify_x509_svid_chain, chain, bundles, None)
    assert compiled == reference
    assert _verdict(compiled) == want, compiled
