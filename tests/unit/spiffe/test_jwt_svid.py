"""JWT-SVID validation (JWT-SVID.md §2-4) and minting, one behaviour per test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from support import pki

from proxy.errors import VerificationError, VerifyFailure
from proxy.spiffe.bundle import JwtBundle, JwtBundleSet
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.jwt_svid import JwtSvid, default_algorithm, mint_jwt_svid, public_jwk

NOW = 1_800_000_000.0
FOO = TrustDomain.parse("foo.test")
KEY = pki.new_key()
RSA_KEY = pki.new_key("rsa")
BUNDLES = JwtBundleSet([JwtBundle(trust_domain=FOO, keys={"k1": public_jwk(KEY.public_key(), "k1"),
                                                          "r1": public_jwk(RSA_KEY.public_key(), "r1")})])
SUB = "spiffe://foo.test/web"


def _claims(**override: object) -> dict:
    claims = {"sub": SUB, "aud": ["api"], "exp": int(NOW + 300), "iat": int(NOW)}
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict | None = None, headers: dict | None = None, key: object = KEY, alg: str = "ES256") -> str:
    return jwt.encode(claims if claims is not None else _claims(), key, algorithm=alg,
                      headers={"kid": "k1"} if headers is None else headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: dict, claims: dict, signature: bytes = b"") -> str:
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(signature)


def _rejects(token: str, reason: VerifyFailure = VerifyFailure.BAD_TOKEN, audience: object = "api",
             now: float = NOW) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        JwtSvid.parse_and_validate(token, BUNDLES, audience, now)  # type: ignore[arg-type]
    assert info.value.reason is reason, info.value.detail
    assert token not in str(info.value)
    return info.value


def test_accepts_good_token() -> None:
    token = _signed()
    svid = JwtSvid.parse_and_validate(token, BUNDLES, "api", NOW)
    assert svid.spiffe_id == SpiffeId.parse(SUB)
    assert svid.audience == ("api",)
    assert svid.expiry == NOW + 300
    assert svid.token == token
    assert svid.claims["sub"] == SUB


def test_accepts_token_signed_by_minter_with_rsa_key() -> None:
    token = mint_jwt_svid(SUB, ["api"], RSA_KEY, "r1", NOW, 60)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert JwtSvid.parse_and_validate(token, BUNDLES, "api", NOW).spiffe_id == SpiffeId.parse(SUB)


@pytest.mark.parametrize("alg", ["PS256", "RS512"])
def test_accepts_other_allowed_rsa_algorithms(alg: str) -> None:
    token = _signed(headers={"kid": "r1"}, key=RSA_KEY, alg=alg)
    assert JwtSvid.parse_and_validate(token, BUNDLES, "api", NOW)


def test_accepts_token_without_kid_by_trying_each_key() -> None:
    assert JwtSvid.parse_and_validate(_signed(headers={}), BUNDLES, "api", NOW)


def test_accepts_string_audience_claim() -> None:
    assert JwtSvid.parse_and_validate(_signed(_claims(aud="api")), BUNDLES, "api", NOW).audience == ("api",)


def test_accepts_when_any_of_our_audiences_matches() -> None:
    assert JwtSvid.parse_and_validate(_signed(), BUNDLES, ["other", "api"], NOW)


def test_accepts_token_expired_within_leeway() -> None:
    assert JwtSvid.parse_and_validate(_signed(), BUNDLES, "api", NOW + 300 + 20)


def test_rejects_alg_none() -> None:
    assert "'none'" in _rejects(_raw({"alg": "none", "typ": "JWT"}, _claims())).detail


def test_rejects_hs256_signed_with_the_public_key() -> None:
    # The classic confusion attack: HMAC keyed with the bundle's public key.
    secret = json.dumps(public_jwk(KEY.public_key(), "k1")).encode()
    header, claims = {"alg": "HS256", "kid": "k1"}, _claims()
    signing_input = _raw(header, claims).rsplit(".", 1)[0]
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert "'HS256'" in _rejects(signing_input + "." + _b64(sig)).detail


def test_checks_alg_before_anything_else() -> None:
    # Unknown trust domain and no exp, but the alg is what gets reported.
    token = _raw({"alg": "HS512"}, {"sub": "spiffe://nowhere.test/x"})
    assert "algorithm 'HS512' is not allowed" in _rejects(token).detail


def test_rejects_unknown_header() -> None:
    _rejects(_signed(headers={"kid": "k1", "x5u": "https://evil.test/keys"}))


@pytest.mark.parametrize("typ", ["wit+jwt", "jwt", "at+jwt"])
def test_rejects_typ_other_than_jwt_or_jose(typ: str) -> None:
    _rejects(_signed(headers={"kid": "k1", "typ": typ}))


@pytest.mark.parametrize("typ", ["JWT", "JOSE"])
def test_accepts_typ_jwt_or_jose(typ: str) -> None:
    assert JwtSvid.parse_and_validate(_signed(headers={"kid": "k1", "typ": typ}), BUNDLES, "api", NOW)


def test_rejects_missing_sub() -> None:
    _rejects(_signed(_claims(sub=None)))


def test_rejects_sub_that_is_not_a_spiffe_id() -> None:
    _rejects(_signed(_claims(sub="spiffe://Foo.test/web")))


def test_rejects_sub_from_unknown_trust_domain() -> None:
    _rejects(_signed(_claims(sub="spiffe://bar.test/web")), VerifyFailure.UNKNOWN_TRUST_DOMAIN)


def test_rejects_token_signed_by_a_key_outside_the_bundle() -> None:
    _rejects(_signed(key=pki.new_key()))


def test_rejects_kid_not_in_bundle() -> None:
    assert "'k9'" in _rejects(_signed(headers={"kid": "k9"})).detail


def test_rejects_tampered_claims() -> None:
    header, _, sig = _signed().split(".")
    forged = _b64(json.dumps(_claims(sub="spiffe://foo.test/admin")).encode())
    _rejects(f"{header}.{forged}.{sig}")


def test_rejects_missing_aud() -> None:
    _rejects(_signed(_claims(aud=None)))


@pytest.mark.parametrize("aud", [[], [""], [1]])
def test_rejects_empty_or_malformed_aud(aud: object) -> None:
    _rejects(_signed(_claims(aud=aud)))


def test_rejects_wrong_aud() -> None:
    _rejects(_signed(_claims(aud=["other"])))


def test_rejects_missing_exp() -> None:
    _rejects(_signed(_claims(exp=None)))


def test_rejects_expired_token() -> None:
    _rejects(_signed(), VerifyFailure.EXPIRED, now=NOW + 300 + 31)


def test_rejects_token_not_yet_valid() -> None:
    _rejects(_signed(_claims(nbf=int(NOW + 120))), VerifyFailure.NOT_YET_VALID)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.???.***"])
def test_rejects_token_that_is_not_compact_jws(token: str) -> None:
    with pytest.raises(VerificationError) as info:
        JwtSvid.parse_and_validate(token, BUNDLES, "api", NOW)
    assert info.value.reason is VerifyFailure.BAD_TOKEN


# --- minting -----------------------------------------------------------------------


def test_minted_token_carries_spiffe_claims_and_headers() -> None:
    token = mint_jwt_svid(SpiffeId.parse(SUB), ["api", "db"], KEY, "k1", NOW, 120)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    svid = JwtSvid.parse_and_validate(token, BUNDLES, "db", NOW)
    assert svid.audience == ("api", "db") and svid.expiry == NOW + 120


def test_minted_single_audience_is_a_string_as_spire_writes_it() -> None:
    token = mint_jwt_svid(SUB, ["api"], KEY, "k1", NOW, 60)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "api"
    assert JwtSvid.parse_and_validate(token, BUNDLES, "api", NOW).audience == ("api",)


def test_mint_refuses_empty_audience() -> None:
    with pytest.raises(ValueError):
        mint_jwt_svid(SUB, [], KEY, "k1", NOW, 60)


def test_mint_refuses_disallowed_algorithm() -> None:
    with pytest.raises(ValueError):
        mint_jwt_svid(SUB, ["api"], KEY, "k1", NOW, 60, alg="HS256")


def test_default_algorithm_follows_the_key() -> None:
    assert default_algorithm(KEY) == "ES256"
    assert default_algorithm(RSA_KEY) == "RS256"


def test_parse_insecure_reads_our_own_token_without_bundles() -> None:
    svid = JwtSvid.parse_insecure(mint_jwt_svid(SUB, ["api"], KEY, "k1", NOW, 60), hint="x")
    assert (str(svid.spiffe_id), svid.expiry, svid.hint) == (SUB, NOW + 60, "x")


def test_public_jwk_is_a_jwt_svid_key() -> None:
    jwk = public_jwk(KEY.public_key(), "k1")
    assert (jwk["kid"], jwk["use"], jwk["kty"], jwk["crv"]) == ("k1", "jwt-svid", "EC", "P-256")
