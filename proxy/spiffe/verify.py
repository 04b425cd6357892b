"""The reference SPIFFE peer verification of an X.509-SVID chain.

This is the readable twin of the verification the compiled engine runs in
the handshake (see ``proxy/tls/engine.py``, "Twins"): same checks, same
order, same ``VerifyFailure`` reasons, so a peer is refused for the same
reason whichever engine runs. The order:

1. no certificate -> NO_CERTIFICATE; parse the leaf -> BAD_CERTIFICATE;
2. exactly one URI SAN -> NO_URI_SAN / MULTIPLE_URI_SANS;
3. strict SPIFFE ID parse -> INVALID_SPIFFE_ID;
4. non-root path -> ROOT_PATH; leaf cA=false -> LEAF_IS_CA; key usage with
   digitalSignature and without keyCertSign/cRLSign -> BAD_KEY_USAGE; EKU,
   if present, with serverAuth and clientAuth -> BAD_EXTENDED_KEY_USAGE;
5. a bundle for the claimed trust domain -> UNKNOWN_TRUST_DOMAIN;
   every certificate parses (an unparseable intermediate is BAD_CERTIFICATE);
6. strength (proxy.spiffe.strength): each certificate the peer sent, leaf
   first then in the order sent, key before signature, -> WEAK_KEY /
   WEAK_SIGNATURE; a sent copy of one of the bundle's authorities is judged
   as an authority: by its key only, with them; then the keys of that
   bundle's authorities, in bundle order -> WEAK_KEY;
7. RFC 5280 path validation against that bundle's authorities only, with
   ``chain_der[1:]`` as untrusted intermediates. Every problem of the path (no issuer, bad signature,
   an issuer that is not a CA or lacks keyCertSign, pathLen exceeded, an
   unhandled critical extension, a name constraint violated, an issuer
   outside its validity) is UNTRUSTED_CHAIN; only when the path is good is
   the leaf's own validity checked: EXPIRED or NOT_YET_VALID.

The chain builder is small and written here rather than delegated to
``cryptography.x509.verification``: that verifier enforces the CA/Browser
Forum's WebPKI profile (key sizes, serial numbers, EKU on CAs...) which
SPIFFE does not require and OpenSSL, in the compiled twin, does not apply,
so the twins would disagree on real SPIRE chains.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from proxy.errors import VerificationError, VerifyFailure
from proxy.spiffe.bundle import X509BundleSet
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.strength import key_failure, strength_failure
from proxy.spiffe.svid import (
    leaf_profile_failure,
    load_certificate,
    signing_cert_failure,
    spiffe_id_from_certificate,
)

# OpenSSL's default depth is 100; SPIFFE chains are a root and at most a few
# intermediates, and a bound keeps a hostile chain from costing much.
MAX_INTERMEDIATES = 8
# Paths explored per verification; an honest chain needs one per certificate.
MAX_SEARCH_STEPS = 64

Authorities = Callable[[TrustDomain], Sequence[bytes] | None]


def verify_x509_svid(chain_der: Sequence[bytes], bundles: X509BundleSet, now: float) -> SpiffeId:
    """Verify a peer's X.509-SVID chain and return its SPIFFE ID.

    Args:
        chain_der: the peer's certificates, leaf first (as sent in TLS).
        bundles: authorities per trust domain; only the bundle of the trust
            domain the leaf claims is used.
        now: the time of verification, Unix seconds.

    Raises:
        VerificationError: the first check that failed (module docstring order).
    """

    def lookup(td: TrustDomain) -> Sequence[bytes] | None:
        bundle = bundles.get(td)
        return None if bundle is None else bundle.authorities

    return _verify(chain_der, lookup, now)


def verify_x509_svid_chain(chain_der: Sequence[bytes], bundles: Mapping[str, Sequence[bytes]],
                           now: float) -> str:
    """The engine-twin form: bundles keyed by trust domain name, ID returned as a string.

    Same checks and reasons as ``proxy._fastpath.verify_x509_svid_chain``.
    ``now`` is required: the core reads no clock. The engines' twins
    default it to the wall clock (tls/engine_py_tls.py, as OpenSSL does in
    the compiled one): they are the measured exception to the sans-IO rule.

    Raises:
        VerificationError: the first check that failed.
    """
    return str(_verify(chain_der, lambda td: bundles.get(td.name), now))


def _verify(chain_der: Sequence[bytes], authorities_of: Authorities, now: float) -> SpiffeId:
    if not chain_der:
        raise VerificationError(VerifyFailure.NO_CERTIFICATE, "peer sent no certificate")
    leaf = load_certificate(chain_der[0])
    spiffe_id = spiffe_id_from_certificate(leaf)
    failure = leaf_profile_failure(leaf, spiffe_id)
    if failure is not None:
        raise VerificationError(failure[0], f"{spiffe_id}: {failure[1]}")
    authorities = authorities_of(spiffe_id.trust_domain)
    if authorities is None:
        raise VerificationError(VerifyFailure.UNKNOWN_TRUST_DOMAIN,
                                f"{spiffe_id}: no bundle for trust domain {spiffe_id.trust_domain}")
    intermediates = [load_certificate(d) for d in chain_der[1:]]
    anchors = [bytes(d) for d in authorities]
    roots = [_authority(d) for d in anchors]
    _check_strength(chain_der, [leaf, *intermediates], anchors, spiffe_id)
    _validate_path(leaf, intermediates, roots, now, spiffe_id)
    _check_validity(leaf, now, spiffe_id)
    return spiffe_id


@functools.lru_cache(maxsize=512)
def _authority(der: bytes) -> x509.Certificate:
    # Authorities are the same few certificates for every handshake. Only the
    # twin form can carry an unparsed one (X509Bundle checks its own); the
    # compiled twin reports it as BAD_CERTIFICATE, so this does too.
    return load_certificate(der)


def _check_strength(chain_der: Sequence[bytes], sent: list[x509.Certificate], anchors: list[bytes],
                    spiffe_id: SpiffeId) -> None:
    """WEAK_KEY / WEAK_SIGNATURE for the first weak certificate (module docstring, step 6)."""
    for i, (der, cert) in enumerate(zip(chain_der, sent)):
        if bytes(der) in anchors:
            continue
        failure = strength_failure(cert)
        if failure is not None:
            what = "leaf" if i == 0 else f"chain certificate {i} ({cert.subject.rfc4514_string()!r})"
            raise VerificationError(failure[0], f"{spiffe_id}: {what}: {failure[1]}")
    for i, der in enumerate(anchors):
        rule = _authority_key_failure(der)
        if rule is not None:
            raise VerificationError(VerifyFailure.WEAK_KEY,
                                    f"{spiffe_id}: authority {i} of trust domain "
                                    f"{spiffe_id.trust_domain}: {rule}")


@functools.lru_cache(maxsize=512)
def _authority_key_failure(der: bytes) -> str | None:
    # Judged once per authority, not per handshake (as the compiled twin's store does).
    return key_failure(_authority(der))


def _validate_path(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                   roots: list[x509.Certificate], now: float, spiffe_id: SpiffeId) -> None:
    """Accept when one signature-valid path to a root passes every RFC 5280 check."""
    if len(intermediates) > MAX_INTERMEDIATES:
        raise VerificationError(VerifyFailure.UNTRUSTED_CHAIN,
                                f"{spiffe_id}: more than {MAX_INTERMEDIATES} intermediates")
    first_problem: str | None = None
    for path in _candidate_paths(leaf, intermediates, roots):
        problem = _path_problem(path, now)
        if problem is None:
            return
        first_problem = first_problem or problem
    detail = first_problem or f"no path to an authority of trust domain {spiffe_id.trust_domain}"
    raise VerificationError(VerifyFailure.UNTRUSTED_CHAIN, f"{spiffe_id}: {detail}")


def _candidate_paths(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                     roots: list[x509.Certificate]) -> Iterator[list[x509.Certificate]]:
    """Yield leaf-first paths ending at a root, each link's signature verified.

    A depth-first search with a budget of extensions and memoised
    signatures: a hostile peer can send intermediates that all sign one
    another (same key, same name), and the permutations must not cost more
    than a bounded number of steps.
    """
    memo: dict[tuple[int, int], bool] = {}
    budget = [MAX_SEARCH_STEPS]

    def issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
        key = (id(child), id(issuer))
        if key not in memo:
            memo[key] = _issued_by(child, issuer)
        return memo[key]

    def extend(path: list[x509.Certificate]) -> Iterator[list[x509.Certificate]]:
        budget[0] -= 1
        if budget[0] < 0:
            return
        child = path[-1]
        for root in roots:
            if issued_by(child, root):
                yield [*path, root]
        if len(path) > MAX_INTERMEDIATES:
            return
        for cert in intermediates:
            if not any(cert is c for c in path) and issued_by(child, cert):
                yield from extend([*path, cert])

    return extend([leaf])


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject or not _key_ids_compatible(child, issuer):
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _key_ids_compatible(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """AKI/SKI must agree when both are present (a cheap filter before signatures)."""
    try:
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return True
    except (ValueError, x509.DuplicateExtension):
        return False
    return aki is None or aki == ski


def _path_problem(path: list[x509.Certificate], now: float) -> str | None:
    """The first RFC 5280 problem of a signature-valid path (leaf first), or None."""
    for cert in path:
        if _has_unhandled_critical_extension(cert):
            return f"certificate {cert.subject.rfc4514_string()!r} has an unhandled critical extension"
    for depth, ca in enumerate(path[1:], start=1):
        name = ca.subject.rfc4514_string()
        rule = signing_cert_failure(ca)
        if rule is not None:
            return f"{name!r}: {rule}"
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.path_length is not None and depth - 1 > bc.path_length:
            return f"{name!r}: path length constraint {bc.path_length} exceeded"
        problem = _name_constraints_problem(ca, path[:depth])
        if problem is not None:
            return f"{name!r}: {problem}"
        if not _valid_at(ca, now):
            return f"{name!r} is outside its validity period"
    return None


def _has_unhandled_critical_extension(cert: x509.Certificate) -> bool:
    # OpenSSL refuses a critical extension it does not understand; cryptography
    # surfaces the ones it cannot decode as UnrecognizedExtension.
    return any(ext.critical and isinstance(ext.value, x509.UnrecognizedExtension) for ext in cert.extensions)


def _name_constraints_problem(ca: x509.Certificate, below: list[x509.Certificate]) -> str | None:
    """Apply the CA's URI and DNS name constraints to the SANs of every certificate below it."""
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    for cert in below:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        for name in san:
            if not _name_allowed(name, nc):
                return f"name constraints forbid {name.value!r}"
    return None


def _name_allowed(name: x509.GeneralName, nc: x509.NameConstraints) -> bool:
    kind: type[x509.GeneralName]
    if isinstance(name, x509.UniformResourceIdentifier):
        host, kind = _uri_host(name.value), x509.UniformResourceIdentifier
    elif isinstance(name, x509.DNSName):
        host, kind = name.value.lower(), x509.DNSName
    else:
        # Other name types: fail closed only if the CA constrains that type.
        constrained = [*(nc.permitted_subtrees or []), *(nc.excluded_subtrees or [])]
        return not any(type(s) is type(name) for s in constrained)
    excluded = [s.value for s in nc.excluded_subtrees or [] if isinstance(s, kind)]
    if any(_host_matches(host, c, kind) for c in excluded):
        return False
    permitted = [s.value for s in nc.permitted_subtrees or [] if isinstance(s, kind)]
    return not permitted or any(_host_matches(host, c, kind) for c in permitted)


def _uri_host(uri: str) -> str:
    rest = uri.partition("://")[2]
    return rest.split("/", 1)[0].lower()


def _host_matches(host: str, constraint: str, kind: type) -> bool:
    """RFC 5280 §4.2.1.10 host matching: URI ".x" means subdomains only; DNS "x" means x and below."""
    constraint = constraint.lower()
    if constraint.startswith("."):
        return host.endswith(constraint)
    if kind is x509.DNSName:
        return not constraint or host == constraint or host.endswith("." + constraint)
    return host == constraint


def _valid_at(cert: x509.Certificate, now: float) -> bool:
    return cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp()


def _check_validity(leaf: x509.Certificate, now: float, spiffe_id: SpiffeId) -> None:
    if now < leaf.not_valid_before_utc.timestamp():
        raise VerificationError(VerifyFailure.NOT_YET_VALID,
                                f"{spiffe_id}: not valid before {leaf.not_valid_before_utc.isoformat()}")
    if now > leaf.not_valid_after_utc.timestamp():
        raise VerificationError(VerifyFailure.EXPIRED,
                                f"{spiffe_id}: expired at {leaf.not_valid_after_utc.isoformat()}")
