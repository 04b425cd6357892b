"""JWT-SVIDs: validation per the JWT-SVID standard, and minting for the embedded agent.

pyjwt verifies signatures; every SPIFFE rule is checked here, in the order
the standard asks: ``alg`` before anything else (a token must never get to
choose how it is verified: ``none`` and HMAC-with-a-public-key are the
classic forgeries), then the other headers, the subject's trust domain
(which selects the only bundle that may vouch for it), the signature, and
the claims against the caller's ``now``. pyjwt reads the wall clock for
``exp``, so its claim checks are off and ours take ``now``.

Tokens are bearer secrets: no error message ever contains one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.errors import InvalidSpiffeIdError, VerificationError, VerifyFailure
from proxy.spiffe.bundle import USE_JWT, JsonObject, JwtBundleSet, jwk_params
from proxy.spiffe.id import SpiffeId

ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
ALLOWED_TYP = frozenset({"JWT", "JOSE"})
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# Verify the signature with pyjwt, but never let it read the clock.
_SIGNATURE_ONLY: Any = {"verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                   "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False}


def _bad(detail: str) -> VerificationError:
    return VerificationError(VerifyFailure.BAD_TOKEN, detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtSvid:
    """A JWT-SVID whose rules (and, if validated, signature) were checked.

    Attributes:
        spiffe_id: the ``sub`` claim.
        token: the compact JWS, to forward as ``Authorization: Bearer``.
        audience: the ``aud`` claim, as a tuple.
        expiry: ``exp``, Unix seconds.
        claims: every claim, read-only.
        hint: the Workload API's operator hint.
    """

    spiffe_id: SpiffeId
    token: str = field(repr=False)
    audience: tuple[str, ...]
    expiry: float
    claims: Mapping[str, Any] = field(compare=False)
    hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @classmethod
    def parse_and_validate(cls, token: str, bundles: JwtBundleSet, audience: str | Iterable[str],
                           now: float, leeway: float = 30) -> JwtSvid:
        """Validate a peer's JWT-SVID against the bundle of its subject's trust domain.

        Args:
            token: the compact JWS.
            bundles: JWT keys per trust domain.
            audience: our identifier(s); the token's ``aud`` must contain at
                least one of them (go-spiffe's any-of).
            now: Unix seconds.
            leeway: clock skew tolerated on ``exp``/``nbf``, seconds.

        Raises:
            VerificationError: BAD_TOKEN, UNKNOWN_TRUST_DOMAIN, EXPIRED or NOT_YET_VALID.
        """
        alg, kid = _check_header(token)
        claims = _unverified_claims(token)
        spiffe_id = _subject(claims)
        bundle = bundles.get(spiffe_id.trust_domain)
        if bundle is None:
            raise VerificationError(VerifyFailure.UNKNOWN_TRUST_DOMAIN,
                                    f"{spiffe_id}: no JWT bundle for trust domain {spiffe_id.trust_domain}")
        if kid is not None:
            jwk = bundle.keys.get(kid)
            if jwk is None:
                raise _bad(f"{spiffe_id}: key ID {kid!r} is not in the bundle of {spiffe_id.trust_domain}")
            candidates = [jwk]
        else:
            candidates = list(bundle.keys.values())
        _verify_signature(token, alg, candidates, spiffe_id)
        expiry = _check_times(claims, now, leeway, spiffe_id)
        auds = _check_audience(claims, audience, spiffe_id)
        return cls(spiffe_id=spiffe_id, token=token, audience=auds, expiry=expiry, claims=claims)

    @classmethod
    def parse_insecure(cls, token: str, hint: str = "") -> JwtSvid:
        """Read a token we were handed by the Workload API (our own), without its signature.

        The headers and the required claims are still checked, so a broken
        issuer is noticed here rather than by every peer.

        Raises:
            VerificationError: BAD_TOKEN.
        """
        _check_header(token)
        claims = _unverified_claims(token)
        spiffe_id = _subject(claims)
        expiry = _number_claim(claims, "exp", spiffe_id)
        auds = _audience_claim(claims, spiffe_id)
        return cls(spiffe_id=spiffe_id, token=token, audience=auds, expiry=expiry, claims=claims, hint=hint)


def _check_header(token: str) -> tuple[str, str | None]:
    """Check alg (first), then the allowed headers and typ; return (alg, kid)."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise _bad("not a JWS in compact serialization")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _bad(f"unreadable JOSE header: {exc}") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise _bad(f"algorithm {alg!r} is not allowed (only RS/ES/PS 256/384/512)")
    unknown = set(header) - ALLOWED_HEADERS
    if unknown:
        raise _bad(f"headers not defined by JWT-SVID: {sorted(unknown)}")
    typ = header.get("typ")
    if typ is not None and typ not in ALLOWED_TYP:
        raise _bad(f"typ {typ!r} is not JWT or JOSE")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise _bad("kid must be a non-empty string")
    return str(alg), kid


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise _bad(f"unreadable claims: {exc}") from None
    if not isinstance(claims, dict):
        raise _bad("claims are not a JSON object")
    return claims


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise _bad("token has no sub claim")
    try:
        return SpiffeId.parse(sub)
    except InvalidSpiffeIdError as exc:
        raise _bad(f"sub is not a SPIFFE ID: {exc.rule}") from None


def _verify_signature(token: str, alg: str, jwks: Sequence[Mapping[str, Any]], spiffe_id: SpiffeId) -> None:
    for jwk in jwks:
        try:
            key = jwt.PyJWK(dict(jwk), algorithm=alg).key
            jwt.decode(token, key=key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.PyJWTError:
            continue
        return
    raise _bad(f"{spiffe_id}: signature does not verify with any key of {spiffe_id.trust_domain}")


def _number_claim(claims: Mapping[str, Any], name: str, spiffe_id: SpiffeId) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{spiffe_id}: token has no numeric {name} claim")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: float, spiffe_id: SpiffeId) -> float:
    expiry = _number_claim(claims, "exp", spiffe_id)
    if now > expiry + leeway:
        raise VerificationError(VerifyFailure.EXPIRED, f"{spiffe_id}: token expired at {expiry:.0f}")
    if "nbf" in claims and now + leeway < _number_claim(claims, "nbf", spiffe_id):
        raise VerificationError(VerifyFailure.NOT_YET_VALID, f"{spiffe_id}: token not valid yet")
    return expiry


def _audience_claim(claims: Mapping[str, Any], spiffe_id: SpiffeId) -> tuple[str, ...]:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(a, str) for a in values):
        raise _bad(f"{spiffe_id}: token has no aud claim")
    return tuple(values)


def _check_audience(claims: Mapping[str, Any], audience: str | Iterable[str], spiffe_id: SpiffeId) -> tuple[str, ...]:
    auds = _audience_claim(claims, spiffe_id)
    expected = {audience} if isinstance(audience, str) else set(audience)
    if not expected & set(auds):
        raise _bad(f"{spiffe_id}: token audience {list(auds)} does not include {sorted(expected)}")
    return auds


def default_algorithm(private_key: object) -> str:
    """The JWS alg for a key: ES256/384/512 by curve, RS256 for RSA."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALG.get(private_key.curve.name)
        if alg is not None:
            return alg
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    raise ValueError(f"no JWT-SVID algorithm for key type {type(private_key).__name__}")


def mint_jwt_svid(spiffe_id: SpiffeId | str, audience: Sequence[str], private_key: Any, kid: str,
                  now: float, ttl: float, alg: str | None = None) -> str:
    """Sign a JWT-SVID (the embedded agent's issuer).

    Args:
        spiffe_id: the subject.
        audience: one or more audiences (the spec requires at least one); a
            single one is encoded as a string, several as a list.
        private_key: a cryptography EC or RSA private key.
        kid: the key ID published in the JWT bundle.
        now: issue time, Unix seconds.
        ttl: lifetime, seconds.
        alg: override the algorithm chosen from the key type.

    Raises:
        ValueError: no audience, a disallowed alg, or an unsupported key.
    """
    if isinstance(audience, str) or not audience:
        raise ValueError("a JWT-SVID needs a non-empty sequence of audiences")
    alg = alg or default_algorithm(private_key)
    if alg not in ALLOWED_ALGORITHMS:
        raise ValueError(f"algorithm {alg!r} is not allowed for JWT-SVIDs")
    sub = str(SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id)
    # One audience is a plain string, as SPIRE (go-jose) writes it: ValidateJWTSVID echoes
    # the claims, and clients of a SPIRE agent read a single ``aud`` as a string.
    aud: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
    claims = {"sub": sub, "aud": aud, "iat": int(now), "exp": int(now + ttl)}
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def public_jwk(public_key: object, kid: str) -> JsonObject:
    """The JWK for a JWT bundle (``use: jwt-svid``, with ``kid``)."""
    jwk = jwk_params(public_key)
    jwk.update(kid=kid, use=USE_JWT)
    return jwk
