"""Transparent routing between pods: the sidecars route by the original destination.

    pod A: app --plain--> B:8080, B:9090, kubelet:7070 --> [iptables] --> sidecar A 127.0.0.1:15001
           (transparent.outbound: a route for B's IP and ports 8080/9090 expecting spiffe://example.org/b;
            any other destination is refused)
    pod B: [iptables] --> sidecar B 0.0.0.0:15006 (transparent.inbound, permissive:
           port 8080 -> 127.0.0.1:8080, 9090 -> 127.0.0.1:9090, other ports refused)
    pod C: like A, but B's policy does not allow C's SPIFFE ID
    pod "kubelet": no sidecar, no rules (an unmeshed client and an unrouted destination)

One outbound listener serves every destination and one inbound listener every
app port: the sidecar reads SO_ORIGINAL_DST (proxy.interception.original_dst)
on each accepted connection and routes by it. All processes are real (agent,
`spiffe-sidecar run`, `spiffe-sidecar iptables install`); see
tests/support/netns_mesh.py for why the sidecars run under a gid of their own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pytest

from support.netns_mesh import INBOUND, OUTBOUND, Mesh

pytestmark = [pytest.mark.netns, pytest.mark.slow]

APP_PORT, METRICS_PORT, UNMAPPED_PORT, UNROUTED_PORT = 8080, 9090, 7777, 7070
APP_UID = 1000

CALLER_YAML = """identity: {{workload_api: "unix://{{socket}}"}}
transparent:
  outbound:
    listen: 127.0.0.1:{outbound}
    unmatched: refuse
    routes:
      - {{cidr: {b_ip}/32, ports: [{app}, {metrics}], expect: spiffe://example.org/b}}
"""
SERVER_YAML = """identity: {{workload_api: "unix://{{socket}}"}}
policy_file: policy.yaml
transparent:
  inbound:
    listen: 0.0.0.0:{inbound}
    mode: permissive
    ports:
      - {{port: {app}, forward_to: "127.0.0.1:{app}", policy: app}}
      - {{port: {metrics}, forward_to: "127.0.0.1:{metrics}", policy: app}}
"""
POLICY_YAML = "policies:\n  app:\n    - name: only-a\n      allow: [spiffe://example.org/a]\n"



@pytest.fixture(scope="module")
def mesh(open_mesh: Callable[[Sequence[str]], Mesh]) -> Mesh:
    m = open_mesh(["a", "b", "c", "kubelet"])
    try:
        fields = dict(outbound=OUTBOUND, inbound=INBOUND, app=APP_PORT, metrics=METRICS_PORT, b_ip=m.net["b"].ip)
        caller = CALLER_YAML.format(**fields)
        m.start_sidecars({"a": caller, "b": SERVER_YAML.format(**fields), "c": caller}, POLICY_YAML)
        for port, banner in ((APP_PORT, "app-b"), (METRICS_PORT, "app-b-metrics"), (UNMAPPED_PORT, "app-b-unmapped")):
            m.net["b"].start_banner_server(port, banner)
        m.net["kubelet"].start_banner_server(UNROUTED_PORT, "kubelet-app")
    except BaseException:
        print(m.logs())
        raise
    return m


def _try(mesh: Mesh, pod: str, host: str, port: int, uid: int | None = APP_UID) -> str:
    return mesh.net[pod].try_connect(host, port, uid=uid)


def test_one_outbound_listener_routes_each_destination_by_its_original_address(mesh: Mesh) -> None:
    a, b = mesh.net["a"], mesh.net["b"]
    assert a.connect(b.ip, APP_PORT, uid=APP_UID) == "app-b from 127.0.0.1\n"
    assert a.connect(b.ip, METRICS_PORT, uid=APP_UID) == "app-b-metrics from 127.0.0.1\n"
    allowed = [line for line in mesh.sidecar_log("b").splitlines() if '"peer_id":"spiffe://example.org/a"' in line
               and '"decision":"allow"' in line]
    assert len(allowed) >= 2, f"both connections crossed B's sidecar over mTLS as A:\n{mesh.logs()}"


def test_a_destination_with_no_route_is_refused_when_unmatched_is_refuse(mesh: Mesh) -> None:
    kubelet = mesh.net["kubelet"]
    assert "kubelet-app" not in _try(mesh, "a", kubelet.ip, UNROUTED_PORT)
    assert kubelet.connect(kubelet.ip, UNROUTED_PORT) == f"kubelet-app from {kubelet.ip}\n", "the app itself is up"


def test_permissive_inbound_lets_an_unmeshed_plaintext_client_reach_the_app(mesh: Mesh) -> None:
    b = mesh.net["b"]
    assert _try(mesh, "kubelet", b.ip, APP_PORT, uid=None) == "app-b from 127.0.0.1\n"


def test_an_inbound_port_with_no_mapping_is_refused(mesh: Mesh) -> None:
    b = mesh.net["b"]
    assert "app-b-unmapped" not in _try(mesh, "kubelet", b.ip, UNMAPPED_PORT, uid=None)


def test_pod_c_whose_identity_b_does_not_allow_is_refused(mesh: Mesh) -> None:
    b = mesh.net["b"]
    assert "app-b" not in _try(mesh, "c", b.ip, APP_PORT)
    assert '"peer_id":"spiffe://example.org/c","decision":"deny"' in mesh.sidecar_log("b").replace(" ", "")
