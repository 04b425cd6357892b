"""The policy routing TPROXY needs: marked packets are delivered locally.

TPROXY assigns a packet to the sidecar's socket and marks it; the mark must
then steer routing to a table whose only route is `local default dev lo`,
or a packet for an address the pod does not own would be forwarded instead
of delivered (Istio: `ip rule add fwmark 0x539 lookup 133`,
`ip route add local 0.0.0.0/0 dev lo table 133`). iptables-restore cannot
express this, so it is done with iproute2, one command at a time.

Every rule and route we add carries the routing protocol tag PROTO, which is
how `remove` and `show` find exactly ours (and never another proxy's rule that
happens to use the same mark or table), whatever mark and table the install
used. Planning is pure (lists of argv); running them is the caller's choice,
so a dry run prints the same commands.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

from proxy.errors import InterceptionError
from proxy.interception.rules import InterceptionSpec

#: rtm_protocol of our rules and routes (unassigned in iproute2's rt_protos).
PROTO = 157
_TIMEOUT_S = 20.0
Argv = list[str]


@dataclass(frozen=True, slots=True)
class RoutingState:
    """Our rules and routes in one address family (parsed from `ip -N -j ... show`)."""

    family: int
    rules: tuple[dict[str, object], ...] = ()
    routes: tuple[dict[str, object], ...] = ()

    @property
    def installed(self) -> bool:
        """True when any rule or route of ours is present."""
        return bool(self.rules or self.routes)


def _ip(family: int, *args: str) -> Argv:
    return ["ip", f"-{family}", *args]


def _default(family: int) -> str:
    return "::/0" if family == 6 else "0.0.0.0/0"


def _run(argv: Argv) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InterceptionError(f"{argv[0]} did not finish within {_TIMEOUT_S:.0f}s", " ".join(argv)) from None
    except OSError as exc:
        raise InterceptionError(f"cannot run {argv[0]}: {exc.strerror or exc} (Debian: apt-get install iproute2)",
                                " ".join(argv)) from None


def available() -> bool:
    """True when iproute2's `ip` is installed."""
    return shutil.which("ip") is not None


def _show(argv: Argv) -> list[dict[str, object]]:
    result = _run(argv)
    if result.returncode != 0:
        raise InterceptionError("reading the policy routing failed", " ".join(argv), result.stderr or result.stdout)
    parsed: list[dict[str, object]] = json.loads(result.stdout or "[]")
    return parsed


def read_routing(family: int) -> RoutingState:
    """Our rules (protocol PROTO) and routes (proto PROTO, any table) in this family."""
    rules = [r for r in _show(["ip", "-N", "-j", f"-{family}", "rule", "show"]) if str(r.get("protocol")) == str(PROTO)]
    routes = _show(["ip", "-N", "-j", f"-{family}", "route", "show", "table", "all", "proto", str(PROTO)])
    return RoutingState(family, tuple(rules), tuple(routes))


def _rule_key(rule: dict[str, object]) -> tuple[int, int]:
    return int(str(rule.get("fwmark", "0")), 0), int(str(rule.get("table", "0")))


def _del_rule(family: int, rule: dict[str, object]) -> Argv:
    mark, table = _rule_key(rule)
    return _ip(family, "rule", "del", "priority", str(rule.get("priority")), "fwmark", hex(mark), "lookup", str(table),
               "proto", str(PROTO))


def _del_route(family: int, route: dict[str, object]) -> Argv:
    dst = str(route.get("dst", "default"))
    return _ip(family, "route", "del", "local", _default(family) if dst == "default" else dst,
               "dev", str(route.get("dev", "lo")), "table", str(route.get("table", "main")), "proto", str(PROTO))


def plan_install(spec: InterceptionSpec, state: RoutingState) -> list[Argv]:
    """Commands that leave exactly one rule and one route of ours (none unless TPROXY).

    Stale entries (another mark or table from an earlier install, a
    duplicate rule) are deleted first; the route is `replace`d (idempotent);
    the rule is added only when missing, since `ip rule add` would duplicate it.
    """
    if not spec.tproxy:
        return plan_remove(state)
    family, wanted = state.family, (spec.tproxy_mark, spec.tproxy_table)
    commands: list[Argv] = []
    kept = False
    for rule in state.rules:
        if _rule_key(rule) == wanted and not kept:
            kept = True
        else:
            commands.append(_del_rule(family, rule))
    commands += [_del_route(family, r) for r in state.routes if str(r.get("table")) != str(spec.tproxy_table)]
    commands.append(_ip(family, "route", "replace", "local", _default(family), "dev", "lo", "table",
                        str(spec.tproxy_table), "proto", str(PROTO)))
    if not kept:
        commands.append(_ip(family, "rule", "add", "fwmark", hex(spec.tproxy_mark), "lookup", str(spec.tproxy_table),
                            "proto", str(PROTO)))
    return commands


def plan_remove(state: RoutingState) -> list[Argv]:
    """Commands that delete every rule and route of ours: rules first, so nothing points at a missing table."""
    return [_del_rule(state.family, r) for r in state.rules] + [_del_route(state.family, r) for r in state.routes]


def apply(commands: list[Argv]) -> None:
    """Run the commands in order; the first failure raises with iproute2's own message."""
    for argv in commands:
        result = _run(argv)
        if result.returncode != 0:
            raise InterceptionError("changing the policy routing failed", " ".join(argv), result.stderr or result.stdout)


def render_show(state: RoutingState) -> str:
    """Our rules and routes, one per line, in `ip` syntax."""
    family = state.family
    lines = [f"ip -{family} rule: priority {r.get('priority')} fwmark {hex(_rule_key(r)[0])} lookup {_rule_key(r)[1]}"
             for r in state.rules]
    lines += [f"ip -{family} route: local {r.get('dst')} dev {r.get('dev')} table {r.get('table')}" for r in state.routes]
    return "\n".join(lines) + ("\n" if lines else "")
