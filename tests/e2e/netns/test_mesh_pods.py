"""Three pods meshed by the real sidecars: A's app reaches B's app over mTLS, C is refused.

    pod A: app --plain--> [iptables] --> sidecar A 127.0.0.1:15001 ==mTLS on the veth==>
    pod B: [iptables] --> sidecar B 0.0.0.0:15006 --plain--> app B 127.0.0.1:8080
    pod C: like A, but B's policy does not allow C's SPIFFE ID
    pod "kubelet": no sidecar, no rules: probes B's excluded health port

Everything is real: the embedded agent (`spiffe-sidecar agent`) on one Unix socket
shared by every pod, one `spiffe-sidecar run` per pod, the rules from
`spiffe-sidecar iptables install`, a tcpdump capture on A's veth.

Until the transparent listeners exist (they route by SO_ORIGINAL_DST), the
sidecars bind plain listeners on the redirect ports: A's outbound listener on
15001 has exactly one upstream (B:8080), and B's inbound listener on 15006
forwards to the app's one port. What the data plane must add for
destination-based routing is described in full_pod_scenario_placeholder.py.

Why the sidecars keep uid 0 here: this machine's Python lives under /root
(mode 0700), which no other uid can read, so a sidecar under uid 1337 cannot
import its own packages. Each sidecar gets its own gid instead, and both the
agent's entries (unix:gid) and the rules (--proxy-gid) key on that gid. The
uid exemption itself is proven in test_iptables_pods.py with uid 1337.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from proxy.interception.original_dst import peek_is_tls_client_hello
from support.netns import PodNetwork, app_python, require_netns, sweep_stale

pytestmark = [pytest.mark.netns, pytest.mark.slow]

APP_PORT, HEALTH_PORT, INBOUND, OUTBOUND = 8080, 8081, 15006, 15001
GIDS = {"a": 1337, "b": 1338, "c": 1339}
APP_UID = 1000

AGENT_YAML = """socket_path: {socket}
socket_mode: "0777"
trust_domains: [{{name: example.org}}]
entries:
  - {{spiffe_id: spiffe://example.org/a, selectors: ["unix:gid:1337"]}}
  - {{spiffe_id: spiffe://example.org/b, selectors: ["unix:gid:1338"]}}
  - {{spiffe_id: spiffe://example.org/c, selectors: ["unix:gid:1339"]}}
"""
CALLER_YAML = """identity: {{workload_api: "unix://{socket}"}}
outbound:
  - {{name: to-b, listen: "127.0.0.1:{outbound}", connect_to: "{b_ip}:{app}", expect: "spiffe://example.org/b"}}
"""
SERVER_YAML = """identity: {{workload_api: "unix://{socket}"}}
inbound:
  - {{name: app, listen: "0.0.0.0:{inbound}", forward_to: "127.0.0.1:{app}", policy: app}}
policy_file: policy.yaml
"""
# A client that reports a reset instead of failing: refusals close the connection.
_CLIENT_TOLERANT = """
import socket
try:
    s = socket.create_connection(('%s', %d), timeout=5)
    s.sendall(b'hello\\n')
    print(s.recv(100).decode(errors='replace'), end='')
except OSError as exc:
    print('refused:', exc)
"""
POLICY_YAML = "policies:\n  app:\n    - name: only-a\n      allow: [spiffe://example.org/a]\n"


class Mesh:
    """The pods plus the agent and sidecar processes, stopped in reverse order."""

    def __init__(self, net: PodNetwork, workdir: Path) -> None:
        self.net, self.workdir = net, workdir
        self.socket = workdir / "agent.sock"
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def install_rules(self, name: str) -> None:
        self.net[name].sidecar_cli("iptables", "install", "--proxy-gid", str(GIDS[name]), "--inbound-port", str(INBOUND),
                                   "--outbound-port", str(OUTBOUND), "--exclude-inbound-ports", f"15000,{HEALTH_PORT}")

    def start_sidecar(self, name: str, config: str) -> Path:
        """Start `spiffe-sidecar run` in the pod under its gid; returns its log (wait for "ready:")."""
        directory = self.workdir / name
        directory.mkdir()
        (directory / "sidecar.yaml").write_text(config)
        (directory / "policy.yaml").write_text(POLICY_YAML)
        argv = ["ip", "netns", "exec", self.net[name].netns, "setpriv", f"--regid={GIDS[name]}", "--clear-groups", "--",
                sys.executable, "-m", "proxy", "run", "--config", str(directory / "sidecar.yaml")]
        log = directory / "sidecar.log"
        self.spawn(argv, log)
        return log

    def logs(self) -> str:
        return "\n".join(f"== {p.relative_to(self.workdir)}\n{p.read_text()[-2000:]}" for p in sorted(self.workdir.rglob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for(log: Path, marker: str, what: str, timeout: float = 20.0) -> None:
    """Poll a log file for a marker (bounded): the process's own signal that it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready within {timeout:.0f}s:\n{log.read_text(errors='replace') if log.exists() else '(no log)'}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    require_netns(("ip", "iptables", "iptables-save", "setpriv", "tcpdump"))
    sweep_stale()
    workdir = tmp_path_factory.mktemp("mesh")
    with PodNetwork(["a", "b", "c", "kubelet"]) as net:
        m = Mesh(net, workdir)
        try:
            (workdir / "agent.yaml").write_text(AGENT_YAML.format(socket=m.socket))
            m.spawn([sys.executable, "-m", "proxy", "agent", "--config", str(workdir / "agent.yaml")], workdir / "agent.log")
            wait_for(workdir / "agent.log", "agent started", "agent")
            fields = dict(socket=m.socket, outbound=OUTBOUND, inbound=INBOUND, app=APP_PORT, b_ip=net["b"].ip)
            logs = {}
            for name in ("a", "b", "c"):
                m.install_rules(name)
                logs[name] = m.start_sidecar(name, (SERVER_YAML if name == "b" else CALLER_YAML).format(**fields))
            for name, log in logs.items():
                wait_for(log, "ready:", f"sidecar {name}")
            net["b"].start_banner_server(APP_PORT, "app-b")
            net["b"].start_banner_server(HEALTH_PORT, "app-b-health")
            yield m
        except BaseException:
            print(m.logs())
            raise
        finally:
            m.stop()


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
    result = c.run([app_python(APP_UID), "-c", _CLIENT_TOLERANT % (b.ip, APP_PORT)], uid=APP_UID, check=False)
    assert result.returncode == 0 and "app-b" not in result.stdout
    log = (mesh.workdir / "b" / "sidecar.log").read_text()
    assert '"peer_id":"spiffe://example.org/c","decision":"deny"' in log.replace(" ", "")


def test_the_health_probe_port_reaches_b_app_directly_and_plaintext_to_the_app_port_does_not(mesh: Mesh) -> None:
    kubelet, b = mesh.net["kubelet"], mesh.net["b"]
    assert kubelet.connect(b.ip, HEALTH_PORT) == f"app-b-health from {kubelet.ip}\n", "excluded port: straight to the app"
    plain = kubelet.run([sys.executable, "-c", _CLIENT_TOLERANT % (b.ip, APP_PORT)], check=False).stdout
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
