"""Three pods meshed by the real sidecars: A's app reaches B's app over mTLS, C is refused.

    pod A: app --plain--> [iptables] --> sidecar A 127.0.0.1:15001 ==mTLS on the veth==>
    pod B: [iptables] --> sidecar B 0.0.0.0:15006 --plain--> app B 127.0.0.1:8080
    pod C: like A, but B's policy does not allow C's SPIFFE ID
    pod "kubelet": no sidecar, no rules: probes B's excluded health port

Everything is real: the embedded agent (`spiffe-sidecar agent`) on one Unix socket
shared by every pod, one `spiffe-sidecar run` per pod, the rules from
`spiffe-sidecar iptables install`, a tcpdump capture on A's veth.

Here the sidecars bind PLAIN listeners on the redirect ports (A's outbound
listener on 15001 has exactly one upstream, B:8080; B's inbound listener on
15006 forwards to the app's one port): the deployment that works without
`transparent:`. Routing by the original destination is
test_transparent_routing_pods.py.

The sidecars keep uid 0 and get a gid each (see tests/support/netns_mesh.py for why).
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

import pytest

from proxy.interception.original_dst import peek_is_tls_client_hello
from support.netns_mesh import HEALTH_PORT, INBOUND, OUTBOUND, Mesh, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

APP_PORT = 8080
APP_UID = 1000

CALLER_YAML = """identity: {{workload_api: "unix://{socket}"}}
outbound:
  - {{name: to-b, listen: "127.0.0.1:{outbound}", connect_to: "{b_ip}:{app}", expect: "spiffe://example.org/b"}}
"""
SERVER_YAML = """identity: {{workload_api: "unix://{socket}"}}
inbound:
  - {{name: app, listen: "0.0.0.0:{inbound}", forward_to: "127.0.0.1:{app}", policy: app}}
policy_file: policy.yaml
"""
POLICY_YAML = "policies:\n  app:\n    - name: only-a\n      allow: [spiffe://example.org/a]\n"


@pytest.fixture(scope="module")
def mesh(open_mesh: Callable[[Sequence[str]], Mesh]) -> Mesh:
    m = open_mesh(["a", "b", "c", "kubelet"])
    try:
        fields = dict(outbound=OUTBOUND, inbound=INBOUND, app=APP_PORT, b_ip=m.net["b"].ip, socket="{socket}")
        caller = CALLER_YAML.format(**fields)
        m.start_sidecars({"a": caller, "b": SERVER_YAML.format(**fields), "c": caller}, POLICY_YAML)
        m.net["b"].start_banner_server(APP_PORT, "app-b")
        m.net["b"].start_banner_server(HEALTH_PORT, "app-b-health")
    except BaseException:
        print(m.logs())
        raise
    return m


def _tcp_payloads(pcap: Path, src_ip: str) -> list[bytes]:
    """TCP payloads sent by src_ip, in order, from a classic pcap of Ethernet frames."""
    data = pcap.read_bytes()
    endian = "<" if data[:4] == bytes.fromhex("d4c3b2a1") else ">"
    payloads, offset = [], 24
    while offset + 16 <= len(data):
        captured = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ip = frame[14:]
        ihl, total = (ip[0] & 0x0F) * 4, struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        if ".".join(map(str, ip[12:16])) == src_ip and len(tcp) > (tcp[12] >> 4) * 4:
            payloads.append(bytes(tcp[(tcp[12] >> 4) * 4:]))
    return payloads


def _capture(mesh: Mesh, pcap: Path) -> subprocess.Popen[bytes]:
    log = mesh.workdir / "tcpdump.log"
    proc = mesh.spawn(["ip", "netns", "exec", mesh.net.node, "tcpdump", "--immediate-mode", "-U", "-n", "-i", "v-a", "-w", str(pcap),
                       "tcp", "port", str(APP_PORT)], log)
    wait_for(log, "listening on", "tcpdump")
    return proc


def test_app_a_reaches_app_b_through_both_sidecars_and_only_tls_crosses_the_veth(mesh: Mesh) -> None:
    a, b = mesh.net["a"], mesh.net["b"]
    pcap = mesh.workdir / "veth-a.pcap"
    tcpdump = _capture(mesh, pcap)
    answer = a.connect(b.ip, APP_PORT, uid=APP_UID)
    time.sleep(0.5)  # the FIN exchange after the answer; immediate mode writes each packet at once
    tcpdump.send_signal(signal.SIGINT)
    tcpdump.wait(5)
    assert answer == "app-b from 127.0.0.1\n", "B's app is reached by its own sidecar, over loopback"
    sent, received = _tcp_payloads(pcap, a.ip), _tcp_payloads(pcap, b.ip)
    assert sent and received, f"nothing captured on A's veth:\n{mesh.logs()}"
    assert peek_is_tls_client_hello(sent[0]), "A's side of the veth starts with a TLS ClientHello"
    assert received[0][:1] == b"\x16", "B answers with a TLS handshake record"
    wire = b"".join(sent + received)
    assert b"hello" not in wire and b"app-b" not in wire, "plaintext crossed the veth"


def test_pod_c_whose_identity_b_does_not_allow_is_refused(mesh: Mesh) -> None:
    c, b = mesh.net["c"], mesh.net["b"]
    assert "app-b" not in c.try_connect(b.ip, APP_PORT, uid=APP_UID)
    log = mesh.sidecar_log("b")
    assert '"peer_id":"spiffe://example.org/c","decision":"deny"' in log.replace(" ", "")


def test_the_health_probe_port_reaches_b_app_directly_and_plaintext_to_the_app_port_does_not(mesh: Mesh) -> None:
    kubelet, b = mesh.net["kubelet"], mesh.net["b"]
    assert kubelet.connect(b.ip, HEALTH_PORT) == f"app-b-health from {kubelet.ip}\n", "excluded port: straight to the app"
    plain = kubelet.try_connect(b.ip, APP_PORT)
    assert "app-b" not in plain, "an unmeshed plaintext client must not reach B's app through B's sidecar"


def test_removing_the_rules_restores_direct_connectivity_while_sidecars_run(mesh: Mesh) -> None:
    a, b = mesh.net["a"], mesh.net["b"]
    try:
        for name in ("a", "b"):
            mesh.net[name].sidecar_cli("iptables", "remove")
        assert a.connect(b.ip, APP_PORT, uid=APP_UID) == f"app-b from {a.ip}\n"
    finally:
        for name in ("a", "b"):
            mesh.install_rules(name)
    assert a.connect(b.ip, APP_PORT, uid=APP_UID) == "app-b from 127.0.0.1\n", "reinstalled rules mesh it again"
