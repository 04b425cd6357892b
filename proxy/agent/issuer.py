"""What the agent hands out: SVIDs per entry, bundles per trust domain.

X.509-SVIDs are cached per registration entry (as SPIRE does), so every
workload matching an entry holds the same SVID and a stream reconnect
does not mint a new key; an SVID is renewed once half its lifetime is
gone. Responses are built as the Workload API messages, full state each
time (the spec's streaming rule). No I/O and no trio here: the server
drives time in with `now`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from proxy.agent.ca import IssuedX509, LocalCA
from proxy.agent.config import AgentConfig, TrustDomainConfig
from proxy.agent.registry import Entry, Registry
from proxy.errors import SpiffeError
from proxy.spiffe.bundle import JwtBundle, JwtBundleSet
from proxy.spiffe.id import SpiffeId, TrustDomain
from proxy.spiffe.jwt_svid import JwtSvid
from proxy.workload_api import workload_pb2 as pb
from proxy.workload_api.grpc import GrpcStatusError, StatusCode

log = logging.getLogger("spiffe_sidecar.agent")


@dataclass(frozen=True, slots=True)
class X509State:
    """One FetchX509SVID message and when it must be rebuilt."""

    response: pb.X509SVIDResponse
    renew_at: float
    serials: tuple[int, ...]


class Issuer:
    """The CAs of every configured trust domain plus the per-entry SVID cache."""

    def __init__(self, config: AgentConfig, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.config = config
        self.registry = Registry(config.entries)
        self.cas: dict[TrustDomain, LocalCA] = {
            td.trust_domain: _open_ca(dataclasses.replace(td, ca_dir=config.ca_dir_for(td)), now)
            for td in config.trust_domains}
        self._x509: dict[int, IssuedX509] = {}

    # -- time ------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Advance CA rotation; True when any published bundle changed."""
        changed = False
        for td, ca in self.cas.items():
            if ca.tick(now):
                changed = True
                log.info("ca rotation trust_domain=%s authorities=%d active_expires=%s", td,
                         len(ca.authorities), _iso(ca.active.not_after))
        return changed

    def next_event(self) -> float:
        return min(ca.next_event() for ca in self.cas.values())

    # -- X.509 -------------------------------------------------------------------

    def _svid(self, entry: Entry, now: float) -> IssuedX509:
        svid = self._x509.get(entry.index)
        if svid is None or now >= svid.renew_at():
            ca = self.cas[entry.spiffe_id.trust_domain]
            svid = ca.issue_x509(entry.spiffe_id, self.config.entry_x509_ttl(entry), entry.dns_names, now)
            self._x509[entry.index] = svid
            log.info("x509-svid issued spiffe_id=%s serial=%x expires=%s", entry.spiffe_id, svid.serial,
                     _iso(svid.not_after))
        return svid

    def x509_state(self, entries: list[Entry], now: float) -> X509State:
        """The FetchX509SVID message for a workload granted `entries` (first = default)."""
        resp = pb.X509SVIDResponse()
        renew_at = float("inf")
        serials = []
        for entry in entries:
            svid = self._svid(entry, now)
            renew_at = min(renew_at, svid.renew_at())
            serials.append(svid.serial)
            resp.svids.add(spiffe_id=str(entry.spiffe_id), x509_svid=svid.chain_der, x509_svid_key=svid.key_der,
                           bundle=self.cas[entry.spiffe_id.trust_domain].x509_bundle_der(), hint=entry.hint)
        for td in self.federated(entries):
            resp.federated_bundles[td.id_string()] = self.cas[td].x509_bundle_der()
        return X509State(resp, renew_at, tuple(serials))

    def federated(self, entries: list[Entry]) -> list[TrustDomain]:
        """Trust domains federated with by the entries, minus their own."""
        own = {e.spiffe_id.trust_domain for e in entries}
        out: list[TrustDomain] = []
        for entry in entries:
            out += [td for td in entry.federates_with if td not in own and td not in out]
        return out

    def visible_domains(self, entries: list[Entry]) -> list[TrustDomain]:
        """Trust domains whose bundles a workload with these entries may see."""
        own: list[TrustDomain] = []
        for entry in entries:
            if entry.spiffe_id.trust_domain not in own:
                own.append(entry.spiffe_id.trust_domain)
        return own + self.federated(entries)

    def x509_bundles(self, entries: list[Entry]) -> pb.X509BundlesResponse:
        resp = pb.X509BundlesResponse()
        for td in self.visible_domains(entries):
            resp.bundles[td.id_string()] = self.cas[td].x509_bundle_der()
        return resp

    # -- JWT ---------------------------------------------------------------------------

    def jwt_bundles(self, entries: list[Entry]) -> pb.JWTBundlesResponse:
        resp = pb.JWTBundlesResponse()
        for td in self.visible_domains(entries):
            resp.bundles[td.id_string()] = self.cas[td].jwks()
        return resp

    def mint_jwt(self, entry: Entry, audience: list[str], now: float) -> pb.JWTSVID:
        ca = self.cas[entry.spiffe_id.trust_domain]
        token, exp = ca.mint_jwt(entry.spiffe_id, audience, self.config.entry_jwt_ttl(entry), now)
        log.info("jwt-svid issued spiffe_id=%s audience=%s expires=%s", entry.spiffe_id, ",".join(audience),
                 _iso(exp))
        return pb.JWTSVID(spiffe_id=str(entry.spiffe_id), svid=token, hint=entry.hint)

    def validate_jwt(self, token: str, audience: str, domains: list[TrustDomain], now: float
                     ) -> tuple[SpiffeId, dict[str, Any]]:
        """Validate a JWT-SVID with the core's rules against the JWT bundles in `domains`.

        The core checks alg first (never `none`/HS*), typ, sub as a SPIFFE
        ID, the bundle of sub's own trust domain only, kid, signature, exp, aud.

        Raises:
            GrpcStatusError: INVALID_ARGUMENT naming the failed rule.
        """
        bundles = JwtBundleSet(JwtBundle.from_jwks(td, self.cas[td].jwks()) for td in domains if td in self.cas)
        try:
            svid = JwtSvid.parse_and_validate(token, bundles, audience, now)
        except SpiffeError as exc:
            raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, f"invalid JWT-SVID: {exc}") from None
        return svid.spiffe_id, dict(svid.claims)


def _open_ca(td: TrustDomainConfig, now: float) -> LocalCA:
    """Open one trust domain's CA and say where it lives; loudly when it dies with the process."""
    ca = LocalCA.open(td, now)
    if td.ca_dir is None:
        log.warning("trust domain %s: the CA is EPHEMERAL (kept in memory only): restarting the agent replaces"
                    " it, and sidecars refuse each other's new SVIDs until every one has reconnected; set"
                    " state_dir or ca_dir to keep it", td.trust_domain)
    else:
        log.info("trust domain %s: CA kept in %s (%d authorities, active until %s)", td.trust_domain,
                 td.ca_dir / td.trust_domain.name, len(ca.authorities), _iso(ca.active.not_after))
    return ca


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
