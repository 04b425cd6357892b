"""Immutable identity values: what a source saw, and what the store publishes.

``X509Context`` is one Workload API update as received: every SVID the
workload is entitled to (possibly none: redacted) and every bundle (own
and federated). Each update is the full state, so a context is built from
one message alone and never merged with the previous one: a federated
bundle missing from an update is gone.

``IdentitySnapshot`` is what the data plane uses: the SVID we present (the
default one, or the one chosen by hint or SPIFFE ID), all SVIDs, the
bundle set, and the store's generation number. It converts to the DER-only
``TlsMaterial`` the TLS engines build contexts from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Iterable, Mapping

from proxy.errors import NoIdentityError
from proxy.spiffe.bundle import X509BundleSet
from proxy.spiffe.id import TrustDomain
from proxy.spiffe.svid import X509Svid
from proxy.tls.material import TlsMaterial


def bundle_authorities(bundles: X509BundleSet) -> dict[str, tuple[bytes, ...]]:
    """Trust domain name (no scheme) -> DER authorities, for every bundle in the set."""
    return bundles.der_map()


def has_bundle(bundles: X509BundleSet, trust_domain: TrustDomain) -> bool:
    """True when the set holds a bundle (with at least one authority) for ``trust_domain``."""
    bundle = bundles.get(trust_domain)
    return bundle is not None and len(bundle.authorities) > 0


@dataclass(frozen=True, slots=True)
class X509Context:
    """One full-state X.509 update: SVIDs (maybe none) and bundles.

    Attributes:
        svids: in the server's order; the first is the default.
        bundles: own trust domain's bundle plus every federated one.
        crl: DER CRLs as sent (kept for completeness; unused by the engines).
    """

    svids: tuple[X509Svid, ...]
    bundles: X509BundleSet
    crl: tuple[bytes, ...] = ()

    @property
    def default_svid(self) -> X509Svid | None:
        """The first SVID, or None when the update redacts them all."""
        return self.svids[0] if self.svids else None

    @property
    def redacted(self) -> bool:
        """True when the update carries no SVID: stop presenting ours."""
        return not self.svids


def select_svid(svids: Iterable[X509Svid], want: str | None = None) -> X509Svid:
    """Pick the SVID to present: the first, or the first whose hint or SPIFFE ID is ``want``.

    Raises:
        NoIdentityError: there is no SVID, or none matches ``want``.
    """
    items = tuple(svids)
    if not items:
        raise NoIdentityError("the Workload API sent no X.509-SVID (none issued, or redacted)")
    if want is None:
        return items[0]
    for svid in items:
        if svid.hint == want or str(svid.spiffe_id) == want:
            return svid
    offered = ", ".join(f"{s.spiffe_id}" + (f" (hint {s.hint!r})" if s.hint else "") for s in items)
    raise NoIdentityError(f"no X.509-SVID matches {want!r}; offered: {offered}")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentitySnapshot:
    """The identity in use: never mutated; a new one replaces it whole.

    Attributes:
        svid: the SVID we present.
        svids: every SVID of the update (svid among them).
        bundles: own and federated trust bundles, one per trust domain.
        generation: set by the store, increasing with each publication.
        source: where it came from ("unix:///run/agent.sock", "files:/etc/svid.pem").
    """

    svid: X509Svid
    svids: tuple[X509Svid, ...]
    bundles: X509BundleSet
    generation: int = 0
    source: str = ""

    @classmethod
    def from_context(cls, context: X509Context, *, want: str | None = None, source: str = "") -> IdentitySnapshot:
        """The snapshot of a context, presenting the SVID picked by ``want``.

        Raises:
            NoIdentityError: the context carries no (matching) SVID.
        """
        svid = select_svid(context.svids, want)
        return cls(svid=svid, svids=context.svids, bundles=context.bundles, source=source)

    def with_generation(self, generation: int) -> IdentitySnapshot:
        """A copy numbered ``generation`` (the store numbers what it publishes)."""
        return replace(self, generation=generation)

    @property
    def spiffe_id(self) -> str:
        """Our SPIFFE ID as a string."""
        return str(self.svid.spiffe_id)

    @property
    def not_after(self) -> float:
        """Our leaf's expiry, Unix seconds."""
        return self.svid.not_after

    @property
    def trust_domains(self) -> tuple[str, ...]:
        """Names of the trust domains we hold bundles for, sorted."""
        return tuple(sorted(bundle_authorities(self.bundles)))

    def to_tls_material(self) -> TlsMaterial:
        """The DER-only material the TLS engines build their contexts from."""
        return TlsMaterial(spiffe_id=self.spiffe_id, chain_der=tuple(self.svid.chain_der),
                           key_der=self.svid.key_der, bundles=MappingProxyType(bundle_authorities(self.bundles)),
                           not_after=self.svid.not_after, generation=self.generation)


def authorities_summary(bundles: X509BundleSet) -> Mapping[str, int]:
    """Trust domain name -> number of authorities, for display."""
    return {name: len(ders) for name, ders in sorted(bundle_authorities(bundles).items())}
