"""Listener plans built by a real Sidecar on real sockets: what an accept costs and decides."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, NoReturn

import pytest

from proxy.config.load import load_sidecar_config_text
from proxy.errors import CloseReason
from proxy.sidecar import Sidecar
from support.net import free_port


def _sidecar(tmp_path: Path, tout: int) -> Sidecar:
    config = load_sidecar_config_text(
        "identity: {files: {cert: c.pem, key: k.pem, bundle: b.pem}}\n"
        f"transparent:\n  outbound:\n    listen: 127.0.0.1:{tout}\n    unmatched: refuse\n"
        "    routes: [{cidr: 10.0.0.0/8, expect: spiffe://example.org/backend}]\n",
        str(tmp_path / "sidecar.yaml"), check_policies=False)
    return Sidecar(config, None, emit=lambda record: None)


def test_the_loop_guard_resolves_this_hosts_addresses_once_and_never_per_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tout = free_port()
    sidecar = _sidecar(tmp_path, tout)
    plan = sidecar._transparent_outbound_plan(sidecar.config.transparent.outbound)  # type: ignore[union-attr]
    host_ips = sorted(ip for ip in sidecar.local_addresses if not ip.startswith("127.") and ":" not in ip)

    def no_resolver(*args: Any, **kw: Any) -> NoReturn:
        raise AssertionError("a host-name lookup on the accept path")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    monkeypatch.setattr(socket, "gethostname", no_resolver)
    try:
        for ip in ["127.0.0.1", "0.0.0.0", *host_ips[:1]]:
            spec = plan.spec((ip, tout))
            assert spec.refusal is not None and spec.refusal[0] is CloseReason.LOOP, ip
        spec = plan.spec(("10.1.2.3", tout))  # a remote address on the same port is routed, not a loop
        assert spec.refusal is None and spec.upstream_host == "10.1.2.3"
    finally:
        plan.sock.close()


def test_an_accept_looks_its_spec_up_and_a_reload_publishes_new_ones(tmp_path: Path) -> None:
    from proxy.policy.load import load_policy_text

    api, tin = free_port(), free_port()
    policy_text = "policies:\n  api:\n    - name: r\n      allow: [spiffe://example.org/frontend]\n"
    (tmp_path / "policy.yaml").write_text(policy_text)
    config = load_sidecar_config_text(
        "identity: {files: {cert: c.pem, key: k.pem, bundle: b.pem}}\npolicy_file: policy.yaml\n"
        f"inbound:\n  - {{name: api, listen: 127.0.0.1:{api}, forward_to: 127.0.0.1:9, policy: api,"
        " limits: {buffer_size: 32KiB}}\n"
        f"transparent:\n  inbound:\n    listen: 0.0.0.0:{tin}\n    ports: [{{port: 8080, policy: api}}]\n",
        str(tmp_path / "sidecar.yaml"), check_policies=False)
    policies = load_policy_text(policy_text, str(tmp_path / "policy.yaml"))
    sidecar = Sidecar(config, policies, emit=lambda record: None)
    explicit = sidecar._inbound_plan(config.inbound[0])
    transparent = sidecar._transparent_inbound_plan(config.transparent.inbound)  # type: ignore[union-attr]
    try:
        first = explicit.spec(None)
        assert explicit.spec(None) is first and first.buffer_size == 32 * 1024
        assert first.authorize("spiffe://example.org/frontend").allowed
        routed = transparent.spec(("10.0.0.1", 8080))
        assert transparent.spec(("10.0.0.2", 8080)) is routed and routed.original_port == 8080
        assert routed.listener == "transparent-inbound" and routed.upstream_port == 8080
        unrouted = transparent.spec(("10.0.0.1", 9090))
        assert unrouted.refusal is not None and unrouted.refusal[0] is CloseReason.NO_ROUTE
        sidecar.apply_reload(load_policy_text(policy_text.replace("frontend", "batch"), "p2.yaml"), config)
        assert explicit.spec(None) is not first and not explicit.spec(None).authorize(
            "spiffe://example.org/frontend").allowed
        assert not transparent.spec(("10.0.0.1", 8080)).authorize("spiffe://example.org/frontend").allowed
    finally:
        explicit.sock.close()
        transparent.sock.close()
