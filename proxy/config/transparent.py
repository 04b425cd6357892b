"""The ``transparent:`` section: listeners fed by iptables REDIRECT, routed by the original destination.

In transparent mode the app does not know its sidecar exists (issue 4): the
init container's NAT rules send every inbound TCP connection of the pod to
``transparent.inbound.listen`` and every outbound one to
``transparent.outbound.listen``; the sidecar reads the original destination
(SO_ORIGINAL_DST) and decides from this section::

    transparent:
      inbound:
        listen: 0.0.0.0:15006          # not loopback: REDIRECT in PREROUTING delivers to the pod's address
        mode: strict                   # or permissive: plaintext beside mTLS during a migration
        interception: redirect         # or tproxy: the listener sets IP_TRANSPARENT (needs CAP_NET_ADMIN)
        ports:                         # original destination port -> app + policy; other ports are refused
          - {port: 8080, forward_to: 127.0.0.1:8080, policy: api}   # forward_to defaults to 127.0.0.1:<port>
      outbound:
        listen: 127.0.0.1:15001        # REDIRECT in OUTPUT delivers to 127.0.0.1
        unmatched: refuse              # or passthrough: plaintext to the original destination
        routes:                        # first match in file order decides the SPIFFE ID to expect
          - {destination: payments.default.svc.cluster.local:8080, expect: spiffe://example.org/ns/default/sa/payments}
          - {cidr: 10.96.0.0/12, ports: [8080], expect: {trust_domain: example.org}}

``interception`` must match the init container's ``--inbound-mode``: TPROXY
only delivers to a listener with IP_TRANSPARENT, and the original
destination is then the socket's own address instead of SO_ORIGINAL_DST.
(It is not called ``mode``: that key already says strict or permissive.)

A route names either one ``destination`` (host:port; a host name matches the
IPs the caller says it resolves to) or a ``cidr`` and/or ``ports``.
Sans-IO: nothing here resolves names or touches sockets.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from proxy.config.values import HostPort, InboundMode, Limits, Unmatched, parse_host_port
from proxy.yamlfields import Section
from proxy.errors import ConfigError
from proxy.policy.load import read_peer_patterns, reject_unknown
from proxy.policy.match import PeerMatcher

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The listener name (log field, metric label) of every transparent inbound connection, whatever its
#: original port (that is the record's ``original_port``): one bounded label value, the plan's own.
TRANSPARENT_INBOUND = "transparent-inbound"
#: The same for transparent outbound.
TRANSPARENT_OUTBOUND = "transparent-outbound"
#: Names an explicit listener may not take (they would merge its metrics with a transparent listener's).
RESERVED_LISTENER_NAMES = frozenset({TRANSPARENT_INBOUND, TRANSPARENT_OUTBOUND})
LimitsReader = Callable[[Section], Limits]  # a listener section -> its effective limits


class Interception(enum.Enum):
    """How iptables delivers inbound connections to the transparent inbound listener."""

    REDIRECT = "redirect"  # nat REDIRECT: original destination from SO_ORIGINAL_DST
    TPROXY = "tproxy"  # mangle TPROXY: IP_TRANSPARENT listener, original destination = getsockname()


@dataclass(frozen=True, slots=True, kw_only=True)
class TransparentPort:
    """Inbound: connections originally for ``port`` go to ``forward_to`` under ``policy``."""

    port: int
    forward_to: HostPort
    policy: str
    line: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransparentInbound:
    """The inbound transparent listener.

    Attributes:
        listen: where REDIRECT delivers (not loopback).
        mode: strict refuses plaintext; permissive forwards it (no identity, no policy).
        interception: redirect or tproxy, as installed by `iptables install --inbound-mode`.
        ports: the original destination ports served, in file order.
        by_port: the same, by port (one dict lookup per connection).
        limits: effective limits.
    """

    listen: HostPort
    mode: InboundMode = InboundMode.STRICT
    interception: Interception = Interception.REDIRECT
    ports: tuple[TransparentPort, ...] = ()
    by_port: Mapping[int, TransparentPort] = field(default_factory=dict)
    limits: Limits = Limits()

    def route(self, port: int) -> TransparentPort | None:
        """The mapping for an original destination port, or None (refuse)."""
        return self.by_port.get(port)

    @property
    def tproxy(self) -> bool:
        """True when the listener must be opened with IP_TRANSPARENT (``open_listening_socket(transparent=...)``)."""
        return self.interception is Interception.TPROXY


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundRoute:
    """Outbound: which original destinations need which upstream SPIFFE ID."""

    expect: PeerMatcher
    destination: HostPort | None = None
    cidr: Network | None = None
    ports: frozenset[int] = frozenset()
    line: int | None = None

    def matches(self, ip: str, port: int, names: Iterable[str] = ()) -> bool:
        """True when ``ip:port`` (known by host ``names``, if any) is covered by this route."""
        if self.destination is not None:
            d = self.destination
            return port == d.port and (ip == d.host or d.host in names)
        if self.ports and port not in self.ports:
            return False
        return self.cidr is None or ipaddress.ip_address(ip) in self.cidr


@dataclass(frozen=True, slots=True, kw_only=True)
class TransparentOutbound:
    """The outbound transparent listener.

    Attributes:
        listen: where REDIRECT delivers (loopback unless allow_non_loopback_listen).
        unmatched: what to do with a destination no route covers.
        routes: in file order; the first match decides.
        limits: effective limits.
    """

    listen: HostPort
    unmatched: Unmatched = Unmatched.REFUSE
    routes: tuple[OutboundRoute, ...] = ()
    limits: Limits = Limits()

    def route_for(self, ip: str, port: int, names: Iterable[str] = ()) -> OutboundRoute | None:
        """The first route covering the original destination, or None (apply ``unmatched``)."""
        for route in self.routes:
            if route.matches(ip, port, names):
                return route
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransparentConfig:
    """Both transparent listeners; either may be absent."""

    inbound: TransparentInbound | None = None
    outbound: TransparentOutbound | None = None


def _choice(kind: type[InboundMode] | type[Unmatched] | type[Interception]) -> Callable[[str], object]:
    def check(value: str) -> object:
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(m.value for m in kind)}, got {value!r}") from None
    return check


def read_transparent(sec: Section, limits: LimitsReader) -> TransparentConfig:
    """Read the ``transparent:`` section (``limits`` reads a listener's ``limits:`` override)."""
    reject_unknown(sec, ("inbound", "outbound"), "transparent has: inbound, outbound")
    inbound = sec.take_section("inbound")
    outbound = sec.take_section("outbound")
    sec.finish()
    return TransparentConfig(inbound=_inbound(inbound, limits) if inbound else None,
                             outbound=_outbound(outbound, limits) if outbound else None)


def _inbound(sec: Section, limits: LimitsReader) -> TransparentInbound:
    listen = sec.take("listen", str, required=True, check=lambda t: parse_host_port(t, ip_only=True))
    if listen.is_loopback:
        raise sec.error("listen", f"{listen} is loopback, but iptables REDIRECT in PREROUTING delivers to the"
                        " pod's own address: listen on 0.0.0.0 (or [::])")
    mode = sec.take("mode", str, default=InboundMode.STRICT, check=_choice(InboundMode))
    interception = sec.take("interception", str, default=Interception.REDIRECT, check=_choice(Interception))
    ports: dict[int, TransparentPort] = {}
    for i, item in enumerate(sec.take_list("ports", required=True)):
        if not isinstance(item, Section):
            raise ConfigError(sec.file, sec.item_line("ports", i), f"{sec.field('ports')}[{i}]",
                              f"expected {{port, forward_to, policy}}, got {item!r}")
        entry = _port(item)
        if entry.port in ports:
            raise item.error("port", f"port {entry.port} is mapped twice (first at line {ports[entry.port].line})")
        ports[entry.port] = entry
    if not ports:
        raise sec.error("ports", "must map at least one original destination port")
    own = limits(sec)
    sec.finish()
    return TransparentInbound(listen=listen, mode=mode, interception=interception, ports=tuple(ports.values()),
                              by_port=ports, limits=own)


def _port(item: Section) -> TransparentPort:
    port = item.take("port", int, required=True)
    if not 1 <= port <= 65535:
        raise item.error("port", f"must be from 1 to 65535, got {port}")
    forward_to = item.take("forward_to", str, default=HostPort(host="127.0.0.1", port=port),
                           check=parse_host_port)
    if not forward_to.is_loopback and not item.take("allow_non_loopback_forward", bool, default=False):
        raise item.error("forward_to", f"{forward_to} is not a loopback address: plaintext to the app stays on"
                         " this host unless allow_non_loopback_forward: true is set")
    policy = item.take("policy", str, required=True)
    item.finish()
    return TransparentPort(port=port, forward_to=forward_to, policy=policy, line=item.line)


def _outbound(sec: Section, limits: LimitsReader) -> TransparentOutbound:
    listen = sec.take("listen", str, required=True, check=lambda t: parse_host_port(t, ip_only=True))
    if not listen.is_loopback and not sec.take("allow_non_loopback_listen", bool, default=False):
        raise sec.error("listen", f"{listen} is not a loopback address: REDIRECT in OUTPUT delivers to"
                        " 127.0.0.1, and plaintext from the app stays on this host unless"
                        " allow_non_loopback_listen: true is set")
    unmatched = sec.take("unmatched", str, default=Unmatched.REFUSE, check=_choice(Unmatched))
    routes = []
    for i, item in enumerate(sec.take_list("routes")):
        if not isinstance(item, Section):
            raise ConfigError(sec.file, sec.item_line("routes", i), f"{sec.field('routes')}[{i}]",
                              f"expected {{destination or cidr/ports, expect}}, got {item!r}")
        routes.append(_route(item))
    own = limits(sec)
    sec.finish()
    return TransparentOutbound(listen=listen, unmatched=unmatched, routes=tuple(routes), limits=own)


def _route(item: Section) -> OutboundRoute:
    reject_unknown(item, ("destination", "cidr", "ports", "expect"), "a route has: destination or cidr/ports,"
                   " and expect")
    destination = item.take("destination", str, check=_ip_destination)
    cidr = item.take("cidr", str, check=lambda t: ipaddress.ip_network(t, strict=True))
    ports = frozenset(_route_port(item, i, p) for i, p in enumerate(item.take_list("ports")))
    if destination is not None and (cidr is not None or ports):
        raise item.error("destination", "a route has either destination (host:port) or cidr/ports, not both")
    if destination is None and cidr is None and not ports:
        raise ConfigError(item.file, item.line, item.path, "a route needs destination, cidr or ports")
    if not item.has("expect"):
        raise item.missing("expect", "is required: the SPIFFE ID (pattern) the destination must present")
    expect = read_peer_patterns(item, "expect", single_ok=True)
    item.finish()
    return OutboundRoute(expect=expect, destination=destination, cidr=cidr, ports=ports, line=item.line)


def _ip_destination(text: str) -> HostPort:
    """``IP:port``, the IP normalised as the original destination reports it (``[::1]``, not ``[0::1]``).

    The transparent listener only learns the original destination's IP: a route written with a
    host name would never match (and with ``unmatched: passthrough`` that traffic would leave in
    plaintext), so a name is rejected until resolution is supported.
    """
    dest = parse_host_port(text)
    ip = dest.ip
    if ip is None:
        raise ValueError(f"{dest.host!r}: host names are not supported yet: use an IP, CIDR or port")
    return HostPort(host=str(ip), port=dest.port)


def _route_port(item: Section, index: int, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(item.file, item.item_line("ports", index), f"{item.field('ports')}[{index}]",
                          f"expected a port from 1 to 65535, got {value!r}")
    return value
