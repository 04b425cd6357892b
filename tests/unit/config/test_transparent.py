"""The transparent: section: port -> app + policy inbound, destination -> expect outbound."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from proxy.config.load import load_sidecar_config_text
from proxy.config.model import InboundMode, SidecarConfig, Unmatched
from proxy.errors import ConfigError

POLICY = "policies:\n  api:\n    - name: a\n      allow: [spiffe://example.org/frontend]\n"
BASE = """\
identity: {workload_api: unix:///run/spiffe/agent.sock}
policy_file: policy.yaml
transparent:
  inbound:
    listen: 0.0.0.0:15006
    mode: permissive
    ports:
      - {port: 8080, policy: api}
      - {port: 9090, forward_to: 127.0.0.1:9091, policy: api}
    limits: {idle_timeout: 1m}
  outbound:
    listen: 127.0.0.1:15001
    routes:
      - {destination: 10.96.0.10:8080, expect: spiffe://example.org/ns/default/sa/payments}
      - {destination: 10.0.0.9:443, expect: spiffe://example.org/db}
      - {cidr: 10.96.0.0/12, ports: [8080, 8443], expect: {trust_domain: example.org}}
      - {ports: [5432], expect: ["spiffe://example.org/ns/*/sa/postgres"]}
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return tmp_path


def load(text: str, cfgdir: Path) -> SidecarConfig:
    return load_sidecar_config_text(text, str(cfgdir / "sidecar.yaml"), env={})


def test_inbound_maps_original_port_to_app_and_policy(cfgdir: Path) -> None:
    t = load(BASE, cfgdir).transparent
    assert t is not None and t.inbound is not None
    assert t.inbound.mode is InboundMode.PERMISSIVE and str(t.inbound.listen) == "0.0.0.0:15006"
    first = t.inbound.route(8080)
    assert first is not None and str(first.forward_to) == "127.0.0.1:8080" and first.policy == "api"
    second = t.inbound.route(9090)
    assert second is not None and second.forward_to.port == 9091
    assert t.inbound.route(22) is None
    assert t.inbound.limits.idle_timeout == 60.0


def test_outbound_routes_first_match_in_file_order(cfgdir: Path) -> None:
    t = load(BASE, cfgdir).transparent
    assert t is not None and t.outbound is not None and t.outbound.unmatched is Unmatched.REFUSE
    out = t.outbound
    by_destination = out.route_for("10.96.0.10", 8080)
    assert by_destination is not None and by_destination.expect.matches("spiffe://example.org/ns/default/sa/payments")
    by_ip = out.route_for("10.0.0.9", 443)
    assert by_ip is not None and by_ip.expect.patterns == ("spiffe://example.org/db",)
    by_cidr = out.route_for("10.96.0.5", 8443)
    assert by_cidr is not None and by_cidr.cidr == ipaddress.ip_network("10.96.0.0/12")
    by_port = out.route_for("192.168.1.1", 5432)
    assert by_port is not None and by_port.expect.matches("spiffe://example.org/ns/x/sa/postgres")
    assert out.route_for("10.96.0.5", 9999) is None
    assert out.route_for("10.0.0.9", 444) is None


def test_transparent_policies_are_checked_against_the_policy_file(cfgdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(BASE.replace("{port: 8080, policy: api}", "{port: 8080, policy: nope}"), cfgdir)
    assert (info.value.line, info.value.field) == (8, "transparent.inbound.ports[0].policy")


def test_redacted_shows_transparent_routes(cfgdir: Path) -> None:
    data = load(BASE, cfgdir).redacted()
    routes = data["transparent"]["outbound"]["routes"]
    assert routes[2]["cidr"] == "10.96.0.0/12" and routes[2]["ports"] == [8080, 8443]
    assert "by_port" not in data["transparent"]["inbound"]


@pytest.mark.parametrize("old, new, line, field, detail", [
    ("listen: 0.0.0.0:15006", "listen: 127.0.0.1:15006", 5, "transparent.inbound.listen", "pod's own address"),
    ("listen: 127.0.0.1:15001", "listen: 0.0.0.0:15001", 12, "transparent.outbound.listen",
     "allow_non_loopback_listen"),
    ("mode: permissive", "mode: lax", 6, "transparent.inbound.mode", "expected one of strict, permissive"),
    ("mode: permissive", "mode: permissive\n    interception: tproxi", 7, "transparent.inbound.interception",
     "expected one of redirect, tproxy"),
    ("{port: 9090, forward_to: 127.0.0.1:9091, policy: api}", "{port: 8080, policy: api}", 9,
     "transparent.inbound.ports[1].port", "mapped twice (first at line 8)"),
    ("{port: 9090, forward_to: 127.0.0.1:9091, policy: api}", "{port: 9090, forward_to: 10.1.1.1:80, policy: api}",
     9, "transparent.inbound.ports[1].forward_to", "allow_non_loopback_forward"),
    ("{port: 8080, policy: api}", "{port: 0, policy: api}", 8, "transparent.inbound.ports[0].port", "1 to 65535"),
    ("routes:\n", "unmatched: drop\n    routes:\n", 13, "transparent.outbound.unmatched",
     "expected one of refuse, passthrough"),
    ("{cidr: 10.96.0.0/12,", "{cidr: 10.96.0.1/12,", 16, "transparent.outbound.routes[2].cidr", "host bits set"),
    ("{ports: [5432],", "{ports: [0],", 17, "transparent.outbound.routes[3].ports[0]", "port from 1 to 65535"),
    ("{destination: 10.0.0.9:443,", "{destination: 10.0.0.9:443, ports: [1],", 15,
     "transparent.outbound.routes[1].destination", "not both"),
    ("{ports: [5432], expect", "{expect", 17, "transparent.outbound.routes[3]", "needs destination, cidr or ports"),
    (", expect: spiffe://example.org/db}", "}", 15, "transparent.outbound.routes[1].expect", "is required"),
    ("expect: spiffe://example.org/db}", "expect: 'spiffe://example.org/db*'}", 15,
     "transparent.outbound.routes[1].expect", "mixes '*'"),
    ("  outbound:\n", "  sideways: {}\n  outbound:\n", 11, "transparent.sideways", "unknown key"),
])
def test_transparent_errors_name_line_and_field(cfgdir: Path, old: str, new: str, line: int, field: str,
                                                detail: str) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as info:
        load(BASE.replace(old, new, 1), cfgdir)
    assert (info.value.line, info.value.field) == (line, field), str(info.value)
    assert detail in info.value.detail, str(info.value)


def test_the_commented_example_block_loads_when_uncommented() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "sidecar.yaml"
    lines = example.read_text().splitlines()
    start = lines.index("# transparent:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    text = "\n".join(lines[:start] + block + lines[start + len(block):])
    config = load_sidecar_config_text(text, str(example), env={})
    assert config.transparent is not None and config.transparent.inbound is not None
    assert config.transparent.inbound.route(8080) is not None


def test_inbound_interception_defaults_to_redirect_and_tproxy_asks_for_a_transparent_listener(cfgdir: Path) -> None:
    from proxy.config.transparent import Interception

    t = load(BASE, cfgdir).transparent
    assert t is not None and t.inbound is not None
    assert t.inbound.interception is Interception.REDIRECT and not t.inbound.tproxy
    t = load(BASE.replace("mode: permissive", "mode: permissive\n    interception: tproxy"), cfgdir).transparent
    assert t is not None and t.inbound is not None
    assert t.inbound.interception is Interception.TPROXY and t.inbound.tproxy
    assert t.inbound.mode is InboundMode.PERMISSIVE, "interception and strict/permissive are independent"
    assert load(BASE.replace("mode: permissive", "interception: tproxy"), cfgdir).redacted()[
        "transparent"]["inbound"]["interception"] == "tproxy"


def test_switching_inbound_interception_requires_a_restart(cfgdir: Path) -> None:
    """The listener socket's IP_TRANSPARENT is set at bind time; a reload cannot flip it."""
    redirect = load(BASE, cfgdir)
    tproxy = load(BASE.replace("mode: permissive", "mode: permissive\n    interception: tproxy"), cfgdir)
    assert "transparent" in redirect.restart_required(tproxy)


@pytest.mark.parametrize("old, new", [
    ("expect: spiffe://example.org/db}", "expect: spiffe://example.org/other}"),
    ("ports: [5432]", "ports: [5433]"),
    ("{port: 8080, policy: api}", "{port: 8081, policy: api}"),
    ("limits: {idle_timeout: 1m}", "limits: {idle_timeout: 2m}"),
    ("listen: 127.0.0.1:15001", "listen: 127.0.0.1:15001\n    unmatched: passthrough"),
])
def test_any_change_of_the_transparent_section_requires_a_restart(cfgdir: Path, old: str, new: str) -> None:
    """Its listeners capture routes, expect, ports, unmatched and limits at start: a reload cannot change them."""
    assert old in BASE
    assert load(BASE, cfgdir).restart_required(load(BASE.replace(old, new), cfgdir)) == ("transparent",)


def test_a_transparent_section_moved_down_the_file_needs_no_restart(cfgdir: Path) -> None:
    moved = BASE.replace("policy_file: policy.yaml\n", "") + "policy_file: policy.yaml\n"
    assert load(BASE, cfgdir).restart_required(load("# a comment\n" + moved, cfgdir)) == ()


def test_a_host_name_destination_is_rejected_at_load(cfgdir: Path) -> None:
    """The listener only knows the original destination's IP: a named route would never match."""
    with pytest.raises(ConfigError) as info:
        load(BASE.replace("destination: 10.96.0.10:8080", "destination: payments.default.svc.cluster.local:8080"),
             cfgdir)
    assert (info.value.line, info.value.field) == (14, "transparent.outbound.routes[0].destination")
    assert "host names are not supported yet: use an IP, CIDR or port" in str(info.value)


def test_an_ip_destination_is_normalised_to_match_the_original_destination(cfgdir: Path) -> None:
    text = BASE.replace("destination: 10.0.0.9:443", "destination: '[fd00:0::0009]:443'")
    t = load(text, cfgdir).transparent
    assert t is not None and t.outbound is not None
    route = t.outbound.route_for("fd00::9", 443)
    assert route is not None and route.expect.patterns == ("spiffe://example.org/db",)
