"""What a reload may change, held as one immutable object swapped in one assignment.

A reload can change a listener's policy name, its limits, an outbound
``expect`` and the policy set at once. The reload runs on its own thread
while listeners accept; if those were separate attributes swapped one after
another, a connection accepted between two assignments could see a new
listener naming a policy the old policy set lacks (a spurious ``no_policy``
denial). ``LiveSettings`` is built completely, then published by rebinding
one reference; each new connection reads that reference once.

Every ConnectionSpec a listener can hand out is built here, once per
reload, so an accept is a dict lookup rather than a construction (only a
transparent outbound connection, whose spec names its own destination, and
a refusal for an unrouted port build one per connection).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from proxy.config.model import InboundListener, InboundMode, Limits, OutboundListener, SidecarConfig
from proxy.config.transparent import TRANSPARENT_INBOUND, TransparentInbound
from proxy.connection.events import DecisionLike
from proxy.connection.machine import ConnectionSpec, Direction, Mode
from proxy.connection.verify import check_expected_peer
from proxy.policy.evaluate import PolicySet


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """The reloadable configuration in force for new connections.

    Attributes:
        config / policies: what the rest is derived from.
        inbound: explicit inbound listeners by name.
        inbound_specs: their connections' specs, by listener name.
        outbound_specs: explicit outbound listeners' specs, by listener name.
        transparent_inbound_specs: the transparent inbound listener's specs, by original port.
    """

    config: SidecarConfig
    policies: PolicySet | None
    inbound: Mapping[str, InboundListener]
    outbound_specs: Mapping[str, ConnectionSpec]
    inbound_specs: Mapping[str, ConnectionSpec]
    transparent_inbound_specs: Mapping[int, ConnectionSpec]

    @classmethod
    def build(cls, config: SidecarConfig, policies: PolicySet | None) -> "LiveSettings":
        """Everything derived from (config, policies), computed before it is published."""
        tin = config.transparent.inbound if config.transparent is not None else None
        return cls(config=config, policies=policies,
                   inbound=MappingProxyType({x.name: x for x in config.inbound}),
                   inbound_specs=MappingProxyType({x.name: inbound_spec(x, policies) for x in config.inbound}),
                   outbound_specs=MappingProxyType({x.name: outbound_spec(x) for x in config.outbound}),
                   transparent_inbound_specs=MappingProxyType(transparent_inbound_specs(
                       tin, policies, config.tls.session_resumption)))


def inbound_spec(listener: InboundListener, policies: PolicySet | None) -> ConnectionSpec:
    """One inbound listener's spec under ``policies`` (shared by its connections until a reload)."""
    if listener.http is not None:
        from proxy.runtime.http.spec import inbound_http_spec

        return inbound_http_spec(listener, policies, limits_keywords(listener.limits))
    return ConnectionSpec(
        listener=listener.name, direction=Direction.INBOUND, upstream_host=listener.forward_to.host,
        upstream_port=listener.forward_to.port, authorize=functools.partial(evaluate, policies, listener.policy),
        session_resumption=listener.tls.session_resumption, peer_expiry=listener.peer_expiry,
        **limits_keywords(listener.limits))


def transparent_inbound_specs(tin: TransparentInbound | None, policies: PolicySet | None,
                              resumption: bool = True) -> dict[int, ConnectionSpec]:
    """The transparent inbound listener's spec per routed original port (none without the listener)."""
    if tin is None:
        return {}
    mode = Mode.SNIFF if tin.mode is InboundMode.PERMISSIVE else Mode.MTLS
    limits = limits_keywords(tin.limits)
    return {route.port: ConnectionSpec(
        listener=TRANSPARENT_INBOUND, original_port=route.port, direction=Direction.INBOUND, mode=mode,
        upstream_host=route.forward_to.host, upstream_port=route.forward_to.port,
        authorize=functools.partial(evaluate, policies, route.policy), session_resumption=resumption,
        **limits) for route in tin.ports}


def outbound_spec(listener: OutboundListener) -> ConnectionSpec:
    """One outbound listener's spec (immutable, shared by its connections until a reload)."""
    if listener.http is not None:
        from proxy.runtime.http.spec import outbound_http_spec

        return outbound_http_spec(listener, limits_keywords(listener.limits))
    return ConnectionSpec(
        listener=listener.name, direction=Direction.OUTBOUND, upstream_host=listener.connect_to.host,
        upstream_port=listener.connect_to.port, session_key=str(listener.connect_to),
        authorize=functools.partial(check_expected_peer, matcher=listener.expect, listener=listener.name),
        session_resumption=listener.tls.session_resumption, peer_expiry=listener.peer_expiry,
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
