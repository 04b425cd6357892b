"""Transparent routing is a pure decision of the core: original destination in, ConnectionSpec out."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.load import load_sidecar_config_text
from proxy.config.transparent import TransparentOutbound
from proxy.connection.machine import ConnectionSpec, Direction, Mode
from proxy.connection.transparent import transparent_inbound_spec, transparent_outbound_spec
from proxy.errors import CloseReason

CONFIG = """\
identity: {workload_api: unix:///run/spiffe/agent.sock}
transparent:
  outbound:
    listen: 127.0.0.1:15001
    unmatched: %s
    routes:
      - {destination: 10.96.0.10:8080, expect: spiffe://example.org/payments}
"""


def outbound(tmp_path: Path, unmatched: str = "refuse") -> TransparentOutbound:
    config = load_sidecar_config_text(CONFIG % unmatched, str(tmp_path / "sidecar.yaml"), env={})
    assert config.transparent is not None and config.transparent.outbound is not None
    return config.transparent.outbound


def route(tout: TransparentOutbound, ip: str, port: int) -> ConnectionSpec:
    return transparent_outbound_spec(tout, (ip, port), own_ports=frozenset({15001, 8443}),
                                     local_addresses=frozenset({"192.0.2.7"}), limits={})


def test_a_routed_destination_expects_the_routes_peer_and_resumes_per_destination(tmp_path: Path) -> None:
    spec = route(outbound(tmp_path), "10.96.0.10", 8080)
    assert spec.refusal is None and spec.session_key == "10.96.0.10:8080"
    assert (spec.upstream_host, spec.upstream_port, spec.original_port) == ("10.96.0.10", 8080, 8080)
    assert spec.authorize("spiffe://example.org/payments").allowed
    assert not spec.authorize("spiffe://example.org/other").allowed


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "0.0.0.0", "192.0.2.7"])
def test_a_destination_that_is_our_own_listener_on_this_host_is_refused_as_a_loop(tmp_path: Path, ip: str) -> None:
    spec = route(outbound(tmp_path), ip, 8443)
    assert spec.refusal is not None and spec.refusal[0] is CloseReason.LOOP


def test_our_port_on_another_host_is_not_a_loop(tmp_path: Path) -> None:
    spec = route(outbound(tmp_path), "198.51.100.1", 8443)
    assert spec.refusal is not None and spec.refusal[0] is CloseReason.NO_ROUTE


def test_unmatched_passthrough_relays_in_plaintext_and_authorizes_no_one(tmp_path: Path) -> None:
    spec = route(outbound(tmp_path, "passthrough"), "198.51.100.1", 80)
    assert spec.refusal is None and spec.mode is Mode.PLAINTEXT
    assert not spec.authorize("spiffe://example.org/payments").allowed


def test_an_unrouted_inbound_port_is_refused_naming_the_port() -> None:
    routed = {8080: ConnectionSpec(listener="t", direction=Direction.INBOUND, upstream_host="127.0.0.1",
                                   upstream_port=8080, authorize=lambda peer: None)}  # type: ignore[arg-type, return-value]
    assert transparent_inbound_spec(routed, ("10.0.0.1", 8080)) is routed[8080]
    refused = transparent_inbound_spec(routed, ("10.0.0.1", 22))
    assert refused.refusal == (CloseReason.NO_ROUTE, "no route for original destination port 22")
    assert refused.original_port == 22
