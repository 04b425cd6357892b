"""FetchJWTSVID responses -> JwtSvid values: the core's reader, first hint wins, broken tokens refused."""

from __future__ import annotations

import time

import jwt
import pytest
from support import pki

from proxy.errors import InvalidSvidError
from proxy.identity import messages
from proxy.spiffe.id import SpiffeId
from proxy.spiffe.jwt_svid import JwtSvid, mint_jwt_svid
from proxy.workload_api import workload_pb2 as pb

KEY = pki.new_key()
NOW = int(time.time())
WEB = "spiffe://example.org/web"


def _response(*svids: tuple[str, str]) -> pb.JWTSVIDResponse:
    resp = pb.JWTSVIDResponse()
    for token, hint in svids:
        resp.svids.add(spiffe_id=WEB, svid=token, hint=hint)
    return resp


def test_tokens_become_jwt_svids_with_claims_and_hint_and_the_first_hint_wins() -> None:
    first = mint_jwt_svid(WEB, ["api", "db"], KEY, "k1", NOW, 300)
    other = mint_jwt_svid("spiffe://example.org/admin", ["api"], KEY, "k1", NOW, 300)
    (svid,) = messages.jwt_svids(_response((first, "web"), (other, "web")))
    assert isinstance(svid, JwtSvid)
    assert svid.spiffe_id == SpiffeId.parse(WEB) and svid.token == first and svid.hint == "web"
    assert svid.audience == ("api", "db") and svid.expiry == NOW + 300 and svid.claims["iat"] == NOW


@pytest.mark.parametrize("claims, headers, rule", [
    ({"sub": WEB, "aud": "api", "exp": NOW + 60}, {"alg": "none"}, "algorithm 'none' is not allowed"),
    ({"sub": WEB, "exp": NOW + 60}, None, "no aud claim"),
    ({"sub": "https://example.org/web", "aud": "api", "exp": NOW + 60}, None, "sub is not a SPIFFE ID"),
])
def test_token_breaking_a_jwt_svid_rule_is_an_invalid_svid(claims: dict, headers: dict | None, rule: str) -> None:
    if headers is not None:
        token = jwt.encode(claims, None, algorithm="none")
    else:
        token = jwt.encode(claims, KEY, algorithm="ES256", headers={"kid": "k1"})
    with pytest.raises(InvalidSvidError) as info:
        messages.jwt_svids(_response((token, "")))
    assert rule in info.value.rule and info.value.spiffe_id == WEB
    assert token not in str(info.value)  # tokens are bearer secrets
