"""The connection specs of ``protocol: http`` listeners (built with each reload, like live.py's).

Inbound: the connection-level verdict is ``PolicySet.admit_http`` (a peer
some rule could allow gets to send requests; connection deny rules still
refuse it before the first byte), and each request is decided by
``PolicySet.evaluate_request``. Outbound: ``Mode.POOLED``; the ``expect``
check runs on every pooled connection the pool opens.
"""

from __future__ import annotations

from typing import Any

from proxy.config.model import InboundListener, OutboundListener
from proxy.connection.events import DecisionLike
from proxy.connection.machine import ConnectionSpec, Direction, Mode
from proxy.errors import DenyReason
from proxy.http.settings import HttpSettings, HttpSpec
from proxy.policy.evaluate import Decision, PolicySet
from proxy.policy.http_match import RequestView


def inbound_http_spec(listener: InboundListener, policies: PolicySet | None, limits: dict[str, Any]) -> ConnectionSpec:
    """An inbound HTTP listener's spec under ``policies``."""
    name = listener.policy

    def admit(peer_id: str) -> DecisionLike:
        if policies is None:
            return Decision(False, None, DenyReason.NO_POLICY, policy=name, peer=peer_id)
        return policies.admit_http(name, peer_id)

    def decide(peer_id: str, request: RequestView) -> DecisionLike:
        if policies is None:
            return Decision(False, None, DenyReason.NO_POLICY, policy=name, peer=peer_id, request=request.describe())
        return policies.evaluate_request(name, peer_id, request)

    return ConnectionSpec(listener=listener.name, direction=Direction.INBOUND,
                          upstream_host=listener.forward_to.host, upstream_port=listener.forward_to.port,
                          authorize=admit, http=HttpSpec(settings=listener.http or HttpSettings(), decide=decide),
                          **limits)


def outbound_http_spec(listener: OutboundListener, limits: dict[str, Any]) -> ConnectionSpec:
    """An outbound HTTP listener's spec: the app's connection is served by the pool."""
    from proxy.connection.verify import check_expected_peer

    return ConnectionSpec(listener=listener.name, direction=Direction.OUTBOUND, mode=Mode.POOLED,
                          upstream_host=listener.connect_to.host, upstream_port=listener.connect_to.port,
                          session_key=str(listener.connect_to),
                          authorize=lambda peer: check_expected_peer(peer, matcher=listener.expect,
                                                                     listener=listener.name),
                          http=HttpSpec(settings=listener.http or HttpSettings(), expect=listener.expect),
                          **limits)
