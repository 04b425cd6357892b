"""`spiffe-sidecar iptables` flags: defaults, env overrides, and refusals before any iptables runs."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.cli import build_parser, main
from proxy.commands.iptables import spec_from_args


def test_defaults_follow_istio_ports_and_uid() -> None:
    spec = spec_from_args(build_parser().parse_args(["iptables", "install"]))
    assert (spec.proxy_uid, spec.inbound_port, spec.outbound_port) == (1337, 15006, 15001)
    assert spec.include_inbound_ports is None and spec.proxy_gid is None


def test_every_flag_can_come_from_the_environment_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_SIDECAR_IPTABLES_PROXY_UID", "2102")
    monkeypatch.setenv("SPIFFE_SIDECAR_IPTABLES_EXCLUDE_CIDRS", "169.254.169.254")
    monkeypatch.setenv("SPIFFE_SIDECAR_IPTABLES_OUTBOUND_PORT", "4140")
    args = build_parser().parse_args(["iptables", "install", "--outbound-port", "15001"])
    spec = spec_from_args(args)
    assert spec.proxy_uid == 2102 and spec.outbound_port == 15001
    assert spec.exclude_cidrs == (ipaddress.ip_network("169.254.169.254/32"),)


def test_bad_options_are_refused_with_exit_2_before_touching_iptables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "install", "--exclude-inbound-ports", "15000,http", "--dry-run"]) == 2
    assert "--exclude-inbound-ports: 'http' is not a port" in capsys.readouterr().err
    assert main(["iptables", "install", "--inbound-port", "15001", "--dry-run"]) == 2
    assert "must differ" in capsys.readouterr().err
