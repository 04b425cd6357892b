"""The registry of variants, in the order tables list them."""

from __future__ import annotations

from bench.peers.base import Variant
from bench.peers.direct import Direct
from bench.peers.haproxy import Haproxy
from bench.peers.nginx import NginxStream
from bench.peers.sidecar import flavours
from bench.peers.stunnel import Stunnel


def all_variants() -> list[Variant]:
    """direct, the three spiffe-sidecar flavours, then the C peers."""
    return [Direct(), *flavours(), Haproxy(), NginxStream(), Stunnel()]


def select(names: list[str] | None) -> list[Variant]:
    """The variants named (in registry order), or all; unknown names are an error."""
    known = all_variants()
    if not names:
        return known
    unknown = set(names) - {v.name for v in known}
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {[v.name for v in known]}")
    return [v for v in known if v.name in names]
