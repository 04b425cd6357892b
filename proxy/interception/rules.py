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

Only TCP is intercepted (UDP, e.g. DNS, passes untouched). Loopback is never
intercepted outbound, which keeps the rules simple: an app that dials its own
pod IP goes over lo and reaches itself directly, without its sidecar (Istio
special-cases that; we document it instead).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from proxy.errors import InterceptionError

CHAIN_INBOUND = "SPIFFE_INBOUND"
CHAIN_INBOUND_REDIRECT = "SPIFFE_INBOUND_REDIRECT"
CHAIN_OUTBOUND = "SPIFFE_OUTBOUND"
CHAIN_OUTBOUND_REDIRECT = "SPIFFE_OUTBOUND_REDIRECT"

#: Our chains, in the order they are declared and deleted.
OWN_CHAINS = (CHAIN_INBOUND, CHAIN_INBOUND_REDIRECT, CHAIN_OUTBOUND, CHAIN_OUTBOUND_REDIRECT)

#: The only rules we put in built-in chains: (built-in chain, rule text as iptables-save prints it).
HOOKS = (
    ("PREROUTING", f"-A PREROUTING -p tcp -j {CHAIN_INBOUND}"),
    ("OUTPUT", f"-A OUTPUT -p tcp -j {CHAIN_OUTBOUND}"),
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
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


@dataclass(frozen=True, slots=True)
class NatState:
    """What of ours is in a live nat table (parsed from iptables-save).

    Attributes:
        chains: our chains that exist.
        references: rules in built-in chains that jump to one of our chains, as printed.
        own_rules: the rules inside our chains, as printed.
    """

    chains: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    own_rules: tuple[str, ...] = field(default=())

    @property
    def installed(self) -> bool:
        """True when any trace of ours is present."""
        return bool(self.chains or self.references)


def _nat_section(save_text: str) -> list[str]:
    lines: list[str] = []
    inside = False
    for line in save_text.splitlines():
        if line.startswith("*"):
            inside = line.strip() == "*nat"
        elif inside and line.strip() == "COMMIT":
            inside = False
        elif inside:
            lines.append(line.rstrip())
    return lines


def parse_nat_state(save_text: str) -> NatState:
    """Find our chains, the hooks into them and their rules in iptables-save output."""
    chains: list[str] = []
    references: list[str] = []
    own_rules: list[str] = []
    for line in _nat_section(save_text):
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name in OWN_CHAINS:
                chains.append(name)
        elif line.startswith("-A "):
            chain = line.split()[1]
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
            if chain in OWN_CHAINS:
                own_rules.append(line)
            elif target in OWN_CHAINS:
                references.append(line)
    return NatState(tuple(chains), tuple(references), tuple(own_rules))


def render_install(spec: InterceptionSpec, family: int, state: NatState) -> str:
    """iptables-restore --noflush input that makes the nat table hold exactly our rules.

    Declaring a chain under --noflush creates it or empties it, so a second
    install rewrites our chains rather than appending to them; hooks are added
    only when missing, and stray references to our chains are deleted, so the
    built-in chains end with exactly one jump each.
    """
    lines = ["*nat"]
    lines += [f":{chain} - [0:0]" for chain in OWN_CHAINS]
    lines += inbound_rules(spec, family)
    lines += outbound_rules(spec, family)
    wanted = {rule for _, rule in HOOKS}
    present = list(state.references)
    for rule in present:
        if rule not in wanted or present.count(rule) > 1:
            lines.append("-D" + rule[2:])
            present.remove(rule)
    lines += [rule for _, rule in HOOKS if rule not in present]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_remove(state: NatState) -> str:
    """iptables-restore --noflush input that removes every trace of ours ("" if none).

    References go first (a referenced chain cannot be deleted), then every
    chain is flushed before any is deleted (our chains jump to each other).
    """
    if not state.installed:
        return ""
    lines = ["*nat"]
    lines += ["-D" + rule[2:] for rule in state.references]
    lines += [f"-F {chain}" for chain in state.chains]
    lines += [f"-X {chain}" for chain in state.chains]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_show(state: NatState) -> str:
    """Our part of the nat table, iptables-save style (hooks first)."""
    lines = [f":{chain} - [0:0]" for chain in state.chains]
    lines += list(state.references) + list(state.own_rules)
    return "\n".join(lines) + ("\n" if lines else "")
