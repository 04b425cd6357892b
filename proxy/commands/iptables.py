"""`spiffe-sidecar iptables install|remove|show`: the init-container job.

Every flag also reads an environment variable (SPIFFE_SIDECAR_IPTABLES_<FLAG>,
e.g. SPIFFE_SIDECAR_IPTABLES_PROXY_UID), because init containers are usually
configured through env; the flag wins when both are given.
"""

from __future__ import annotations

import argparse
import os
import sys

from proxy.interception import iptables
from proxy.interception.rules import INBOUND_MODES, InterceptionSpec, parse_cidrs, parse_include_ports, parse_ports

_ENV_PREFIX = "SPIFFE_SIDECAR_IPTABLES_"


def _env(flag: str, default: str) -> str:
    return os.environ.get(_ENV_PREFIX + flag.upper().replace("-", "_"), default)


def _add_common(p: argparse.ArgumentParser, dry_run: bool) -> None:
    p.add_argument("--mode", choices=iptables.MODES, default=_env("mode", "auto"),
                   help="iptables back end: nft, legacy, or auto (the one the host already uses); default auto")
    p.add_argument("--ipv6", action="store_true", default=_env("ipv6", "") not in ("", "0", "false"),
                   help="also program ip6tables (install); remove/show always look at IPv6 too")
    if dry_run:
        p.add_argument("--dry-run", action="store_true",
                       help="print the iptables-restore input and command instead of applying it")


def _add_install_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proxy-uid", type=int, default=int(_env("proxy-uid", "1337")),
                   help="uid the sidecar runs as; its own connections are never redirected (default 1337)")
    p.add_argument("--proxy-gid", type=int, default=int(_env("proxy-gid", "-1")),
                   help="gid whose connections are never redirected either (default: none)")
    p.add_argument("--inbound-port", type=int, default=int(_env("inbound-port", "15006")),
                   help="port of the sidecar's inbound transparent listener (default 15006)")
    p.add_argument("--outbound-port", type=int, default=int(_env("outbound-port", "15001")),
                   help="port of the sidecar's outbound transparent listener (default 15001)")
    p.add_argument("--include-inbound-ports", default=_env("include-inbound-ports", "*"),
                   help='inbound ports to intercept: "*" (default) or a list like 8080,9000-9010')
    p.add_argument("--exclude-inbound-ports", default=_env("exclude-inbound-ports", ""),
                   help="inbound ports that reach the app directly (health probes, admin), e.g. 15000,15090")
    p.add_argument("--exclude-outbound-ports", default=_env("exclude-outbound-ports", ""),
                   help="destination ports the app reaches directly")
    p.add_argument("--exclude-cidrs", default=_env("exclude-cidrs", ""),
                   help="destination CIDRs the app reaches directly (e.g. the node, a metadata server)")
    p.add_argument("--exclude-inbound-cidrs", default=_env("exclude-inbound-cidrs", ""),
                   help="source CIDRs whose connections reach the app directly (e.g. the kubelet's node IP); "
                        "they bypass mTLS and policy, so keep this narrow")
    p.add_argument("--inbound-mode", choices=INBOUND_MODES, default=_env("inbound-mode", "redirect"),
                   help="redirect (nat REDIRECT, default) or tproxy (mangle TPROXY plus an ip rule and route: "
                        "no NAT, the listener must set IP_TRANSPARENT); outbound always uses REDIRECT")
    p.add_argument("--tproxy-mark", type=_int_any_base, default=_int_any_base(_env("tproxy-mark", "0x539")),
                   help="firewall mark TPROXY sets and the ip rule matches (default 0x539)")
    p.add_argument("--tproxy-route-table", type=int, default=int(_env("tproxy-route-table", "133")),
                   help="routing table holding 'local default dev lo' for marked packets (default 133)")


def _int_any_base(text: str) -> int:
    """A mark as iptables and ip print it: 0x539 or 1337."""
    return int(text, 0)


def spec_from_args(args: argparse.Namespace) -> InterceptionSpec:
    """Validate the install flags into an InterceptionSpec (InterceptionError on bad input)."""
    return InterceptionSpec(
        proxy_uid=args.proxy_uid,
        proxy_gid=None if args.proxy_gid < 0 else args.proxy_gid,
        inbound_port=args.inbound_port,
        outbound_port=args.outbound_port,
        include_inbound_ports=parse_include_ports(args.include_inbound_ports),
        exclude_inbound_ports=parse_ports(args.exclude_inbound_ports, "--exclude-inbound-ports"),
        exclude_outbound_ports=parse_ports(args.exclude_outbound_ports, "--exclude-outbound-ports"),
        exclude_cidrs=parse_cidrs(args.exclude_cidrs, "--exclude-cidrs"),
        exclude_inbound_cidrs=parse_cidrs(args.exclude_inbound_cidrs, "--exclude-inbound-cidrs"),
        inbound_mode=args.inbound_mode,
        tproxy_mark=args.tproxy_mark,
        tproxy_table=args.tproxy_route_table,
    )


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _install(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    families = (4, 6) if args.ipv6 else (4,)
    iptables.install(spec, mode=args.mode, families=families, dry_run=args.dry_run, out=_write)
    return 0


def _remove(args: argparse.Namespace) -> int:
    iptables.remove(mode=args.mode, families=(4, 6), dry_run=args.dry_run, out=_write)
    return 0


def _show(args: argparse.Namespace) -> int:
    installed = iptables.show(mode=args.mode, families=(4, 6), out=_write)
    return 0 if installed else 3


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `iptables install|remove|show` to the CLI."""
    p = sub.add_parser("iptables", help="install, remove or show the transparent-interception iptables rules",
                       description="Rules that send a pod's TCP to the sidecar's transparent listeners (nat REDIRECT, or mangle "
                                   "TPROXY for inbound with --inbound-mode tproxy) "
                                   "(run as root or with CAP_NET_ADMIN, usually in an init container).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    install = actions.add_parser("install", help="install or rewrite the rules (idempotent)")
    _add_install_flags(install)
    _add_common(install, dry_run=True)
    install.set_defaults(func=_install)
    remove = actions.add_parser("remove", help="remove every rule and chain of ours")
    _add_common(remove, dry_run=True)
    remove.set_defaults(func=_remove)
    show = actions.add_parser("show", help="print our rules (exit 3 when none are installed)")
    _add_common(show, dry_run=False)
    show.set_defaults(func=_show)
