"""Which ConnectionSpec a transparent listener's connection gets, from where it was going.

Pure decisions over the original destination the runtime read from the
socket (SO_ORIGINAL_DST or the TPROXY local address): route it, refuse it
(no route, or a loop back into this sidecar), or pass it through in
plaintext. They were closures inside sidecar.py; as functions of the core
they take every input as an argument and are tested without a socket.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Mapping

from proxy.config.model import Unmatched
from proxy.config.transparent import TRANSPARENT_INBOUND, TRANSPARENT_OUTBOUND, TransparentOutbound
from proxy.connection.connect import is_loopback
from proxy.connection.events import DecisionLike
from proxy.connection.machine import ConnectionSpec, Direction, Mode
from proxy.connection.verify import ExpectDecision, check_expected_peer
from proxy.errors import CloseReason, DenyReason


def transparent_inbound_spec(routed: Mapping[int, ConnectionSpec], destination: tuple[str, int] | None
                             ) -> ConnectionSpec:
    """The routed port's spec, or a refusal naming the port when no route covers it."""
    port = destination[1] if destination else 0
    found = routed.get(port)
    if found is not None:
        return found
    return ConnectionSpec(listener=TRANSPARENT_INBOUND, direction=Direction.INBOUND, upstream_host="",
                          upstream_port=0, authorize=deny_all, original_port=port, refusal=(
                              CloseReason.NO_ROUTE, f"no route for original destination port {port}"))


def transparent_outbound_spec(tout: TransparentOutbound, destination: tuple[str, int] | None, *,
                              own_ports: frozenset[int], local_addresses: frozenset[str],
                              limits: Mapping[str, Any]) -> ConnectionSpec:
    """Route an intercepted outbound connection by its original destination (first matching route).

    A destination that is one of our own listeners on this host is a loop
    (our upstream connection was intercepted again): refused. No route:
    ``unmatched`` says pass through in plaintext or refuse.
    """
    ip, port = destination or ("", 0)
    common: dict[str, Any] = dict(listener=TRANSPARENT_OUTBOUND, direction=Direction.OUTBOUND,
                                  original_port=port, upstream_host=ip, upstream_port=port, **limits)
    if port in own_ports and is_local(ip, local_addresses):
        return ConnectionSpec(**common, authorize=deny_all, refusal=(
            CloseReason.LOOP, f"original destination {ip}:{port} is this sidecar's own listener (loop)"))
    route = tout.route_for(ip, port)
    if route is not None:
        return ConnectionSpec(**common, session_key=f"{ip}:{port}", authorize=functools.partial(
            check_expected_peer, matcher=route.expect, listener=TRANSPARENT_OUTBOUND))
    if tout.unmatched is Unmatched.PASSTHROUGH:
        return ConnectionSpec(**common, mode=Mode.PLAINTEXT, authorize=deny_all)
    return ConnectionSpec(**common, authorize=deny_all, refusal=(
        CloseReason.NO_ROUTE, f"no route for original destination {ip}:{port} (unmatched: refuse)"))


def is_local(ip: str, local: frozenset[str]) -> bool:
    """True when ``ip`` is one of this host's addresses (``local``) as far as a loop is concerned."""
    if is_loopback(ip) or ip in local:
        return True
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return False


def deny_all(peer_id: str) -> DecisionLike:
    """The authorizer of a connection that has no route: nothing is allowed."""
    return ExpectDecision(False, None, DenyReason.NO_MATCHING_RULE, "this connection has no authorization route")
