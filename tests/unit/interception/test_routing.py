"""The policy routing plan TPROXY needs (pure: the commands, not their effect; the pod tests run them)."""

from __future__ import annotations

import pytest

from proxy.cli import build_parser
from proxy.commands.iptables import spec_from_args
from proxy.interception.routing import PROTO, RoutingState, plan_install, plan_remove, render_show
from proxy.interception.rules import InterceptionSpec

TPROXY = InterceptionSpec(inbound_mode="tproxy")
OURS: dict[str, object] = {"priority": 32765, "src": "all", "fwmark": "0x539", "table": "133", "protocol": str(PROTO)}
ROUTE: dict[str, object] = {"type": "2", "dst": "default", "dev": "lo", "table": "133"}


def test_a_fresh_install_adds_the_local_route_then_the_fwmark_rule_both_tagged_as_ours() -> None:
    assert plan_install(TPROXY, RoutingState(4)) == [
        ["ip", "-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "133", "proto", str(PROTO)],
        ["ip", "-4", "rule", "add", "fwmark", "0x539", "lookup", "133", "proto", str(PROTO)],
    ]
    assert plan_install(TPROXY, RoutingState(6))[0][:6] == ["ip", "-6", "route", "replace", "local", "::/0"]


def test_a_reinstall_adds_no_second_rule() -> None:
    commands = plan_install(TPROXY, RoutingState(4, (OURS,), (ROUTE,)))
    assert [c[2:4] for c in commands] == [["route", "replace"]]


def test_a_changed_mark_or_table_replaces_the_old_rule_and_route() -> None:
    spec = InterceptionSpec(inbound_mode="tproxy", tproxy_mark=0x77, tproxy_table=200)
    commands = plan_install(spec, RoutingState(4, (OURS, dict(OURS, priority=32764)), (ROUTE,)))
    assert commands[0] == ["ip", "-4", "rule", "del", "priority", "32765", "fwmark", "0x539", "lookup", "133",
                           "proto", str(PROTO)]
    assert commands[1][4:6] == ["priority", "32764"]
    assert commands[2] == ["ip", "-4", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", "133",
                           "proto", str(PROTO)]
    assert commands[-1] == ["ip", "-4", "rule", "add", "fwmark", "0x77", "lookup", "200", "proto", str(PROTO)]


def test_redirect_mode_and_remove_delete_ours_rules_before_routes() -> None:
    state = RoutingState(6, (dict(OURS),), (ROUTE,))
    assert plan_install(InterceptionSpec(), state) == plan_remove(state)
    assert [c[3] for c in plan_remove(state)] == ["del", "del"] and plan_remove(state)[0][2] == "rule"
    assert plan_remove(RoutingState(4)) == []


def test_show_names_mark_table_and_route() -> None:
    text = render_show(RoutingState(4, (OURS,), (ROUTE,)))
    assert text == "ip -4 rule: priority 32765 fwmark 0x539 lookup 133\nip -4 route: local default dev lo table 133\n"


def test_the_cli_reads_mode_mark_and_table_from_flags_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_SIDECAR_IPTABLES_INBOUND_MODE", "tproxy")
    assert spec_from_args(build_parser().parse_args(["iptables", "install"])).tproxy
    monkeypatch.delenv("SPIFFE_SIDECAR_IPTABLES_INBOUND_MODE")
    args = build_parser().parse_args(["iptables", "install", "--inbound-mode", "tproxy", "--tproxy-mark", "0x1f",
                                      "--tproxy-route-table", "99"])
    spec = spec_from_args(args)
    assert (spec.tproxy, spec.tproxy_mark, spec.tproxy_table) == (True, 0x1F, 99)
    default = spec_from_args(build_parser().parse_args(["iptables", "install"]))
    assert (default.inbound_mode, default.tproxy_mark, default.tproxy_table) == ("redirect", 0x539, 133)
