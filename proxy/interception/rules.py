"""The interception rule model: what to redirect, rendered as iptables-restore input.

Pure data and text, no processes: `iptables.py` reads the live state with
iptables-save, asks this module what to write, and feeds the text to
iptables-restore --noflush. Keeping the rendering pure lets the dry run print
exactly what would be applied, and lets unit tests check the rules without root.

The layout follows Istio's and Linkerd's proxy-init (same ideas, our own chain
names so the two never collide):

    nat PREROUTING -p tcp -> SPIFFE_INBOUND
        excluded source CIDRs, excluded ports       RETURN
        included ports ("*" = every port)            -> SPIFFE_INBOUND_REDIRECT (REDIRECT --to-ports inbound)
    nat OUTPUT -p tcp -> SPIFFE_OUTBOUND
        owner uid (and gid) of the proxy             RETURN   (the sidecar's own upstream connections: no loop)
        -o lo                                        RETURN   (app <-> sidecar, app -> own pod IP, localhost)
        excluded ports, excluded destination CIDRs   RETURN
        everything else                              -> SPIFFE_OUTBOUND_REDIRECT (REDIRECT --to-ports outbound)

With ``inbound_mode="tproxy"`` (``--inbound-mode tproxy``) inbound moves to
the mangle table and outbound stays REDIRECT, as Istio does:

    mangle PREROUTING -p tcp -> SPIFFE_INBOUND
        -i lo                                        RETURN   (app <-> sidecar and the sidecar -> app hop)
        excluded source CIDRs, excluded ports        RETURN
        -m socket --transparent                      -> SPIFFE_DIVERT (MARK, ACCEPT: the sidecar's own flows)
        conntrack RELATED,ESTABLISHED                RETURN   (replies to the pod's own connections:
                                                              TPROXY would find a non-transparent socket and drop them)
        included ports ("*" = every port)            -> SPIFFE_INBOUND_TPROXY
                                                        (TPROXY --on-port inbound --on-ip 0.0.0.0 --tproxy-mark)
    plus `ip rule fwmark <mark> lookup <table>` and `local default dev lo table <table>` (routing.py).

Only TCP is intercepted (UDP, e.g. DNS, passes untouched). Loopback is never
intercepted outbound, which keeps the rules simple: an app that dials its own
pod IP goes over lo and reaches itself directly, without its sidecar (Istio
special-cases that; we document it instead).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from proxy.errors import InterceptionError
from proxy.interception.table import (
    TableState, Wanted, parse_table_state, render_remove, render_show, render_wanted,
)

__all__ = ["InterceptionSpec", "NatState", "TableState", "parse_nat_state", "parse_table_state", "render_install",
           "render_remove", "render_show", "wanted_table"]

CHAIN_INBOUND = "SPIFFE_INBOUND"
CHAIN_INBOUND_REDIRECT = "SPIFFE_INBOUND_REDIRECT"
CHAIN_OUTBOUND = "SPIFFE_OUTBOUND"
CHAIN_OUTBOUND_REDIRECT = "SPIFFE_OUTBOUND_REDIRECT"
CHAIN_INBOUND_TPROXY = "SPIFFE_INBOUND_TPROXY"
CHAIN_DIVERT = "SPIFFE_DIVERT"
INBOUND_MODES = ("redirect", "tproxy")

#: Our chains, in the order they are declared and deleted.
OWN_CHAINS = (CHAIN_INBOUND, CHAIN_INBOUND_REDIRECT, CHAIN_OUTBOUND, CHAIN_OUTBOUND_REDIRECT)

#: The only rules we put in built-in chains: (built-in chain, rule text as iptables-save prints it).
HOOKS = (
    ("PREROUTING", f"-A PREROUTING -p tcp -j {CHAIN_INBOUND}"),
    ("OUTPUT", f"-A OUTPUT -p tcp -j {CHAIN_OUTBOUND}"),
)
#: The same PREROUTING hook, in the mangle table under TPROXY.
MANGLE_HOOK = f"-A PREROUTING -p tcp -j {CHAIN_INBOUND}"

#: The nat table's state: the name from before the mangle table joined, kept for its callers.
NatState = TableState

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RESERVED_TABLES = (253, 254, 255)
PortRange = tuple[int, int]


def parse_ports(text: str, what: str) -> tuple[PortRange, ...]:
    """Parse "15000,15090,8000-8010" into port ranges; "" means none.

    Raises:
        InterceptionError: a port is not an integer in 1..65535 or a range is reversed.
    """
    ranges: list[PortRange] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        low_s, sep, high_s = item.replace(":", "-").partition("-")
        try:
            low, high = int(low_s), int(high_s if sep else low_s)
        except ValueError:
            raise InterceptionError(f"{what}: {item!r} is not a port or a port range like 8000-8010") from None
        if not (1 <= low <= high <= 65535):
            raise InterceptionError(f"{what}: {item!r} must be within 1..65535, low end first")
        ranges.append((low, high))
    return tuple(ranges)


def parse_include_ports(text: str) -> tuple[PortRange, ...] | None:
    """Parse --include-inbound-ports: "*" (every port) is None, else port ranges."""
    if text.strip() == "*":
        return None
    return parse_ports(text, "--include-inbound-ports")


def parse_cidrs(text: str, what: str) -> tuple[Network, ...]:
    """Parse "10.0.0.0/8,fd00::/8,169.254.169.254" (a bare address is a /32 or /128)."""
    nets: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise InterceptionError(f"{what}: {item!r} is not a CIDR: {exc}") from None
    return tuple(nets)


@dataclass(frozen=True, slots=True, kw_only=True)
class InterceptionSpec:
    """What to intercept; one field per `spiffe-sidecar iptables install` flag.

    ``include_inbound_ports`` None means every port ("*").
    """

    proxy_uid: int = 1337
    proxy_gid: int | None = None
    inbound_port: int = 15006
    outbound_port: int = 15001
    include_inbound_ports: tuple[PortRange, ...] | None = None
    exclude_inbound_ports: tuple[PortRange, ...] = ()
    exclude_outbound_ports: tuple[PortRange, ...] = ()
    exclude_cidrs: tuple[Network, ...] = ()
    exclude_inbound_cidrs: tuple[Network, ...] = ()
    inbound_mode: str = "redirect"
    tproxy_mark: int = 0x539
    tproxy_table: int = 133

    @property
    def tproxy(self) -> bool:
        """True when inbound is intercepted by TPROXY (mangle) instead of REDIRECT (nat)."""
        return self.inbound_mode == "tproxy"

    def __post_init__(self) -> None:
        for name in ("inbound_port", "outbound_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise InterceptionError(f"--{name.replace('_', '-')}: {port} must be within 1..65535")
        if self.inbound_port == self.outbound_port:
            raise InterceptionError("--inbound-port and --outbound-port must differ: one listener cannot tell the directions apart")
        for name in ("proxy_uid", "proxy_gid"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InterceptionError(f"--{name.replace('_', '-')}: {value} must not be negative")
        if self.inbound_mode not in INBOUND_MODES:
            raise InterceptionError(f"--inbound-mode {self.inbound_mode!r}: expected one of {', '.join(INBOUND_MODES)}")
        if not 1 <= self.tproxy_mark <= 0xFFFFFFFF:
            raise InterceptionError(f"--tproxy-mark: {self.tproxy_mark:#x} must be a non-zero 32-bit mark")
        if not 1 <= self.tproxy_table <= 0xFFFFFFFF or self.tproxy_table in RESERVED_TABLES:
            raise InterceptionError(f"--tproxy-route-table: {self.tproxy_table} must be a table number other than"
                                    " 253 (default), 254 (main) and 255 (local)")


def _dport(ports: PortRange) -> str:
    low, high = ports
    return f"--dport {low}" if low == high else f"--dport {low}:{high}"


def _of_family(nets: Iterable[Network], family: int) -> list[Network]:
    return [net for net in nets if net.version == family]


def inbound_rules(spec: InterceptionSpec, family: int) -> list[str]:
    """The rules of SPIFFE_INBOUND and SPIFFE_INBOUND_REDIRECT, in order."""
    rules = [f"-A {CHAIN_INBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {spec.inbound_port}"]
    rules += [f"-A {CHAIN_INBOUND} -s {net} -j RETURN" for net in _of_family(spec.exclude_inbound_cidrs, family)]
    rules += [f"-A {CHAIN_INBOUND} -p tcp {_dport(p)} -j RETURN" for p in spec.exclude_inbound_ports]
    if spec.include_inbound_ports is None:
        rules.append(f"-A {CHAIN_INBOUND} -p tcp -j {CHAIN_INBOUND_REDIRECT}")
    else:
        rules += [f"-A {CHAIN_INBOUND} -p tcp {_dport(p)} -j {CHAIN_INBOUND_REDIRECT}" for p in spec.include_inbound_ports]
    return rules


def outbound_rules(spec: InterceptionSpec, family: int) -> list[str]:
    """The rules of SPIFFE_OUTBOUND and SPIFFE_OUTBOUND_REDIRECT, in order.

    The owner match comes first: whatever else is configured, the proxy's own
    connections must never come back to it.
    """
    rules = [f"-A {CHAIN_OUTBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {spec.outbound_port}"]
    rules.append(f"-A {CHAIN_OUTBOUND} -m owner --uid-owner {spec.proxy_uid} -j RETURN")
    if spec.proxy_gid is not None:
        rules.append(f"-A {CHAIN_OUTBOUND} -m owner --gid-owner {spec.proxy_gid} -j RETURN")
    rules.append(f"-A {CHAIN_OUTBOUND} -o lo -j RETURN")
    rules += [f"-A {CHAIN_OUTBOUND} -p tcp {_dport(p)} -j RETURN" for p in spec.exclude_outbound_ports]
    rules += [f"-A {CHAIN_OUTBOUND} -d {net} -j RETURN" for net in _of_family(spec.exclude_cidrs, family)]
    rules.append(f"-A {CHAIN_OUTBOUND} -p tcp -j {CHAIN_OUTBOUND_REDIRECT}")
    return rules


def tproxy_rules(spec: InterceptionSpec, family: int) -> list[str]:
    """The rules of SPIFFE_DIVERT, SPIFFE_INBOUND_TPROXY and (mangle) SPIFFE_INBOUND, in order.

    Loopback returns first: mangle sees every packet, including the
    sidecar's hop to the app on 127.0.0.1, which TPROXY would otherwise
    send back to the sidecar. Established flows must never reach the TPROXY
    rule: for a socket that is not transparent (the sidecar's own upstream
    connections, an excluded port's replies) TPROXY drops the packet.
    """
    mark = f"{spec.tproxy_mark:#x}/0xffffffff"
    on_ip = "::" if family == 6 else "0.0.0.0"
    rules = [f"-A {CHAIN_DIVERT} -j MARK --set-xmark {mark}", f"-A {CHAIN_DIVERT} -j ACCEPT",
             f"-A {CHAIN_INBOUND_TPROXY} -p tcp -j TPROXY --on-port {spec.inbound_port} --on-ip {on_ip} --tproxy-mark {mark}",
             f"-A {CHAIN_INBOUND} -i lo -j RETURN"]
    rules += [f"-A {CHAIN_INBOUND} -s {net} -j RETURN" for net in _of_family(spec.exclude_inbound_cidrs, family)]
    rules += [f"-A {CHAIN_INBOUND} -p tcp {_dport(p)} -j RETURN" for p in spec.exclude_inbound_ports]
    rules.append(f"-A {CHAIN_INBOUND} -p tcp -m socket --transparent -j {CHAIN_DIVERT}")
    rules.append(f"-A {CHAIN_INBOUND} -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    if spec.include_inbound_ports is None:
        rules.append(f"-A {CHAIN_INBOUND} -p tcp -j {CHAIN_INBOUND_TPROXY}")
    else:
        rules += [f"-A {CHAIN_INBOUND} -p tcp {_dport(p)} -j {CHAIN_INBOUND_TPROXY}" for p in spec.include_inbound_ports]
    return rules


def wanted_table(spec: InterceptionSpec, family: int, table: str) -> Wanted:
    """What `table` should hold for this spec: nat always carries outbound; inbound is nat or mangle."""
    if table == "mangle":
        if not spec.tproxy:
            return Wanted("mangle")
        return Wanted("mangle", (CHAIN_INBOUND, CHAIN_INBOUND_TPROXY, CHAIN_DIVERT), tuple(tproxy_rules(spec, family)),
                      (MANGLE_HOOK,))
    outbound_hook = HOOKS[1][1]
    if spec.tproxy:
        return Wanted("nat", (CHAIN_OUTBOUND, CHAIN_OUTBOUND_REDIRECT), tuple(outbound_rules(spec, family)),
                      (outbound_hook,))
    return Wanted("nat", OWN_CHAINS, tuple(inbound_rules(spec, family) + outbound_rules(spec, family)),
                  tuple(rule for _, rule in HOOKS))


def parse_nat_state(save_text: str) -> TableState:
    """Find our nat chains, the hooks into them and their rules in iptables-save output."""
    return parse_table_state(save_text, "nat")


def render_install(spec: InterceptionSpec, family: int, state: TableState) -> str:
    """iptables-restore --noflush input that makes ``state.table`` hold exactly our rules ("" if nothing to do)."""
    return render_wanted(wanted_table(spec, family, state.table), state)
