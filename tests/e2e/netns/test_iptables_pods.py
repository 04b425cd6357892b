"""Interception rules in real pods (network namespaces on a bridge).

What runs here is what needs no data plane: the real `spiffe-sidecar iptables`
command in each pod, plain apps (a client and a banner server) in the app
role, and, on the sidecar's listener ports, a reporter that answers with the
destination recovered by the real `original_destination` helper. That proves
the redirects land where the transparent listeners sit, with the original
destination intact, independently of the sidecar. The sidecars themselves run
in test_mesh_pods.py and test_transparent_routing_pods.py.
"""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from support.netns import PodNetwork, require_netns, sweep_stale

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PROXY_UID = 1337
APP_UID = 1000
INBOUND, OUTBOUND, ADMIN, HEALTH = 15006, 15001, 15000, 8081
INSTALL = ("iptables", "install", "--proxy-uid", str(PROXY_UID), "--inbound-port", str(INBOUND),
           "--outbound-port", str(OUTBOUND), "--exclude-inbound-ports", f"{ADMIN},{HEALTH}")


@pytest.fixture
def pods() -> Iterator[PodNetwork]:
    require_netns()
    sweep_stale()
    with PodNetwork(["a", "b", "c"]) as net:
        yield net


def _report(text: str) -> dict[str, object]:
    assert text.strip(), "the connection got no answer"
    return json.loads(text)


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_install_is_idempotent_and_remove_leaves_no_trace(pods: PodNetwork, mode: str) -> None:
    b = pods["b"]
    save_tool = f"iptables-{mode}-save"
    before = b.iptables_save(save_tool)
    b.sidecar_cli(*INSTALL, "--mode", mode)
    once = b.iptables_save(save_tool)
    b.sidecar_cli(*INSTALL, "--mode", mode)
    assert b.iptables_save(save_tool) == once, "a second install must not change anything"
    assert once.count("-j SPIFFE_INBOUND\n") == 1 and once.count("-j SPIFFE_OUTBOUND\n") == 1
    shown = b.sidecar_cli("iptables", "show").stdout
    assert f"iptables-{mode} (nat)" in shown and "--uid-owner 1337 -j RETURN" in shown
    b.sidecar_cli("iptables", "remove")
    after = b.iptables_save(save_tool)
    assert "SPIFFE" not in after and after == before
    assert b.sidecar_cli("iptables", "show", check=False).returncode == 3


def test_dry_run_prints_the_restore_input_and_changes_nothing(pods: PodNetwork) -> None:
    b = pods["b"]
    before = b.iptables_save()
    out = b.sidecar_cli(*INSTALL, "--dry-run").stdout
    assert "--noflush" in out and "*nat" in out and "-A PREROUTING -p tcp -j SPIFFE_INBOUND" in out
    assert b.iptables_save() == before


def test_an_iptables_failure_is_shown_verbatim_with_its_command(pods: PodNetwork) -> None:
    b = pods["b"]
    result = b.sidecar_cli(*INSTALL, "--exclude-inbound-cidrs", "10.0.0.0/8", "--proxy-gid", "4294967296", check=False)
    assert result.returncode == 2
    assert "command: " in result.stderr and "-restore --noflush" in result.stderr
    assert "iptables said:" in result.stderr


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_inbound_connection_to_the_app_port_reaches_the_inbound_listener_with_its_original_destination(pods: PodNetwork, mode: str) -> None:
    a, b = pods["a"], pods["b"]
    b.sidecar_cli(*INSTALL, "--mode", mode)
    with b.original_destination_reporter(INBOUND) as seen:
        report = _report(a.connect(b.ip, 8080, uid=APP_UID))
    assert report["original"] == [b.ip, 8080]
    assert report["peer"] == a.ip, "inbound REDIRECT keeps the caller's address"
    assert seen == [(b.ip, 8080)]


def test_ipv6_inbound_connection_is_redirected_when_ipv6_rules_are_installed(pods: PodNetwork) -> None:
    a, b = pods["a"], pods["b"]
    b.sidecar_cli(*INSTALL, "--ipv6")
    with b.original_destination_reporter(INBOUND, host="::") as seen:
        report = _report(a.connect(b.ip6, 8080, uid=APP_UID))
    assert report["original"] == [b.ip6, 8080] and report["peer"] == a.ip6
    assert seen == [(b.ip6, 8080)]
    b.sidecar_cli("iptables", "remove")
    assert "SPIFFE" not in b.iptables_save("ip6tables-save")


def test_outbound_connection_from_the_app_reaches_the_outbound_listener_with_its_original_destination(pods: PodNetwork) -> None:
    a, b = pods["a"], pods["b"]
    a.sidecar_cli(*INSTALL)
    with a.original_destination_reporter(OUTBOUND) as seen:
        report = _report(a.connect(b.ip, 9090, uid=APP_UID))
    assert report["original"] == [b.ip, 9090]
    assert report["local"] == ["127.0.0.1", OUTBOUND], "outbound REDIRECT lands on the pod's loopback"
    assert seen == [(b.ip, 9090)]


def test_health_probe_port_excluded_from_interception_reaches_the_app_directly(pods: PodNetwork) -> None:
    a, b = pods["a"], pods["b"]
    b.sidecar_cli(*INSTALL)
    b.start_banner_server(HEALTH, "app-b-health")
    with b.original_destination_reporter(INBOUND) as seen:
        assert a.connect(b.ip, HEALTH, uid=APP_UID) == f"app-b-health from {a.ip}\n"
        _report(a.connect(b.ip, 8080, uid=APP_UID))
    assert seen == [(b.ip, 8080)], "only the intercepted port reached the inbound listener"


def test_the_proxy_uid_connections_are_not_redirected_so_the_sidecar_cannot_loop(pods: PodNetwork) -> None:
    a, b = pods["a"], pods["b"]
    a.sidecar_cli(*INSTALL)
    b.start_banner_server(8080, "app-b")
    with a.original_destination_reporter(OUTBOUND) as seen:
        assert a.connect(b.ip, 8080, uid=PROXY_UID) == f"app-b from {a.ip}\n"
        assert _report(a.connect(b.ip, 8080, uid=APP_UID))["original"] == [b.ip, 8080]
    assert seen == [(b.ip, 8080)], "only the app's connection was redirected"


def test_loopback_connections_inside_the_pod_are_not_intercepted(pods: PodNetwork) -> None:
    a = pods["a"]
    a.sidecar_cli(*INSTALL)
    a.start_banner_server(8080, "app-a")
    with a.original_destination_reporter(OUTBOUND) as seen:
        assert a.connect("127.0.0.1", 8080, uid=APP_UID) == "app-a from 127.0.0.1\n"
    assert seen == []


def test_removing_the_rules_restores_direct_connectivity(pods: PodNetwork) -> None:
    a, b, c = pods["a"], pods["b"], pods["c"]
    for pod in (a, b):
        pod.sidecar_cli(*INSTALL)
    b.start_banner_server(8080, "app-b")
    with a.original_destination_reporter(OUTBOUND):
        assert _report(a.connect(b.ip, 8080, uid=APP_UID))["original"] == [b.ip, 8080]
    with b.original_destination_reporter(INBOUND):
        assert _report(c.connect(b.ip, 8080, uid=APP_UID))["original"] == [b.ip, 8080]
    for pod in (a, b):
        pod.sidecar_cli("iptables", "remove")
    assert a.connect(b.ip, 8080, uid=APP_UID) == f"app-b from {a.ip}\n"
    assert c.connect(b.ip, 8080, uid=APP_UID) == f"app-b from {c.ip}\n"
