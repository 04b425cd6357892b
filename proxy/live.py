"""What a reload may change, held as one immutable object swapped in one assignment.

A reload can change a listener's policy name, its limits, an outbound
``expect`` and the policy set at once. The reload runs on its own thread
while listeners accept; if those were separate attributes swapped one after
another, a connection accepted between two assignments could see a new
listener naming a policy the old policy set lacks (a spurious ``no_policy``
denial). ``LiveSettings`` is built completely, then published by rebinding
one reference; each new connection reads that reference once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from proxy.config.model import InboundListener, Limits, OutboundListener, SidecarConfig
from proxy.connection.events import DecisionLike
from proxy.connection.machine import ConnectionSpec, Direction
from proxy.connection.verify import check_expected_peer
from proxy.policy.evaluate import PolicySet


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """The reloadable configuration in force for new connections."""

    config: SidecarConfig
    policies: PolicySet | None
    inbound: Mapping[str, InboundListener]
    outbound_specs: Mapping[str, ConnectionSpec]

    @classmethod
    def build(cls, config: SidecarConfig, policies: PolicySet | None) -> "LiveSettings":
        """Everything derived from (config, policies), computed before it is published."""
        return cls(config=config, policies=policies,
                   inbound=MappingProxyType({x.name: x for x in config.inbound}),
                   outbound_specs=MappingProxyType({x.name: outbound_spec(x) for x in config.outbound}))


def outbound_spec(listener: OutboundListener) -> ConnectionSpec:
    """One outbound listener's spec (immutable, shared by its connections until a reload)."""
    return ConnectionSpec(
        listener=listener.name, direction=Direction.OUTBOUND, upstream_host=listener.connect_to.host,
        upstream_port=listener.connect_to.port, session_key=str(listener.connect_to),
        authorize=functools.partial(check_expected_peer, matcher=listener.expect, listener=listener.name),
        **limits_keywords(listener.limits))


def limits_keywords(limits: Limits) -> dict[str, Any]:
    """The per-connection limits of a listener, as ConnectionSpec keywords."""
    return dict(handshake_timeout=limits.handshake_timeout, connect_timeout=limits.connect_timeout,
                idle_timeout=limits.idle_timeout, max_lifetime=limits.max_connection_lifetime,
                max_connections=limits.max_connections, buffer_size=limits.buffer_size)


def evaluate(policies: PolicySet | None, policy_name: str, peer_id: str) -> DecisionLike:
    """Authorize a peer against one policy of a set (no set: deny with ``no_policy``)."""
    if policies is None:
        from proxy.errors import DenyReason
        from proxy.policy.evaluate import Decision

        return Decision(False, None, DenyReason.NO_POLICY, policy=policy_name, peer=peer_id)
    return policies.evaluate(policy_name, peer_id)
