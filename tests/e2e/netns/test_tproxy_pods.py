"""TPROXY inbound interception in real pods: the rules, the policy routing, and the sidecar behind them.

    pod A: app --plain--> B:8080 --> [nat REDIRECT] --> sidecar A 127.0.0.1:15001 --mTLS--> B:8080
    pod B: [mangle TPROXY, mark 0x539, ip rule -> table 133] --> sidecar B 0.0.0.0:15006 (IP_TRANSPARENT,
           transparent.inbound.interception: tproxy, strict) --> app 127.0.0.1:8080
    pod "kubelet": no sidecar: a plaintext client and the excluded health port's caller

The first tests need no sidecar: `spiffe-sidecar iptables install
--inbound-mode tproxy` with each back end, a transparent listener opened by
the real open_listening_socket, and the original destination read by the
real destination_of. The mesh tests run the real agent and `spiffe-sidecar
run`, whose transparent inbound listener gets IP_TRANSPARENT from
`interception: tproxy`.

The kernel must have TPROXY and the socket match (xt_TPROXY/xt_socket or
their nft counterparts): require_tproxy() probes both back ends in a
scratch pod, without modprobe, and fails with "NETNS TESTS NOT RUN" naming
what is missing, never a silent skip.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from typing import Callable, Iterator, Sequence

import pytest

from proxy.runtime.sockets import destination_of, open_listening_socket
from support.netns import Pod, PodNetwork, entered, require_netns, sweep_stale
from support.netns_mesh import ADMIN, HEALTH_PORT, INBOUND, OUTBOUND, Mesh

pytestmark = [pytest.mark.netns, pytest.mark.slow]

APP_PORT, APP_UID = 8080, 1000
TPROXY = ("--inbound-mode", "tproxy")
INSTALL = ("iptables", "install", "--proxy-uid", "1337", "--inbound-port", str(INBOUND), "--outbound-port",
           str(OUTBOUND), "--exclude-inbound-ports", f"{ADMIN},{HEALTH_PORT}", *TPROXY)
_PROBE_RULES = (["-m", "socket", "--transparent", "-j", "MARK", "--set-mark", "1"],
                ["-j", "TPROXY", "--on-port", "1", "--tproxy-mark", "1"])


def _tproxy_support(pod: Pod) -> dict[str, str]:
    """Per back end: "" when TPROXY and the socket match load in this kernel, else iptables' words."""
    found: dict[str, str] = {}
    for kind in ("nft", "legacy"):
        errors = []
        for rule in _PROBE_RULES:
            result = pod.run([f"iptables-{kind}", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", *rule], check=False)
            if result.returncode != 0:
                errors.append(f"{' '.join(rule)}: {result.stderr.strip() or result.stdout.strip()}")
            else:
                pod.run([f"iptables-{kind}", "-t", "mangle", "-D", "PREROUTING", "-p", "tcp", *rule], check=False)
        found[kind] = "; ".join(errors)
    return found


def require_tproxy(pod: Pod, kind: str | None = None) -> None:
    """Fail loudly unless TPROXY works with `kind` (or with either back end when None)."""
    support = _tproxy_support(pod)
    usable = [k for k, err in support.items() if not err and (kind is None or k == kind)]
    if not usable:
        tried = "; ".join(f"iptables-{k}: {err or 'ok'}" for k, err in support.items())
        pytest.fail(f"NETNS TESTS NOT RUN: the kernel lacks TPROXY or the socket match (CONFIG_NETFILTER_XT_TARGET_TPROXY,"
                    f" CONFIG_NETFILTER_XT_MATCH_SOCKET or CONFIG_NFT_TPROXY/NFT_SOCKET) for"
                    f" {'iptables-' + kind if kind else 'both back ends'}; tried {tried}", pytrace=False)


@pytest.fixture
def pods() -> Iterator[PodNetwork]:
    require_netns(("ip", "iptables-nft", "iptables-legacy", "setpriv"))
    sweep_stale()
    with PodNetwork(["a", "b"], subnet=3) as net:
        yield net


def _traces(pod: Pod, kind: str) -> str:
    """Everything TPROXY could leave behind: nat and mangle in both families, ip rules and routes.

    Packet counters ("[3:180]") are dropped: stray packets move them, rules are what we compare.
    So are routes the kernel adds itself ("proto kernel": IPv6 link-local autoconfiguration
    comes and goes on its own clock); ours are proto 157.
    """
    parts = [pod.run([f"{tool}-{kind}-save", "-t", table]).stdout
             for tool in ("iptables", "ip6tables") for table in ("nat", "mangle")]
    parts += [pod.run(["ip", f"-{v}", "rule", "show"]).stdout for v in (4, 6)]
    parts += [pod.run(["ip", f"-{v}", "route", "show", "table", "all"]).stdout for v in (4, 6)]
    return "\n".join(re.sub(r"\[\d+:\d+\]$", "", line) for part in parts for line in part.splitlines()
                     if not line.startswith("#") and "proto kernel" not in line)


@pytest.mark.parametrize("kind", ["nft", "legacy"])
def test_tproxy_install_is_idempotent_shown_and_removed_without_a_trace(pods: PodNetwork, kind: str) -> None:
    b = pods["b"]
    require_tproxy(b, kind)
    before = _traces(b, kind)
    dry = b.sidecar_cli(*INSTALL, "--ipv6", "--mode", kind, "--dry-run").stdout
    assert "*mangle" in dry and "-j TPROXY --on-port 15006" in dry and "ip -4 rule add fwmark 0x539 lookup 133" in dry
    assert _traces(b, kind) == before, "a dry run changes nothing"
    b.sidecar_cli(*INSTALL, "--ipv6", "--mode", kind)
    once = _traces(b, kind)
    b.sidecar_cli(*INSTALL, "--ipv6", "--mode", kind)
    assert _traces(b, kind) == once, "a second install must not change anything"
    assert b.run(["ip", "-4", "rule", "show"]).stdout.count("fwmark 0x539 lookup 133") == 1
    assert "local default dev lo" in b.run(["ip", "-6", "route", "show", "table", "133"]).stdout
    shown = b.sidecar_cli("iptables", "show").stdout
    assert f"iptables-{kind} (mangle)" in shown and "--tproxy-mark 0x539/0xffffffff" in shown
    assert "# policy routing (ip -4)" in shown and "fwmark 0x539 lookup 133" in shown
    b.sidecar_cli("iptables", "remove")
    assert _traces(b, kind) == before
    assert b.sidecar_cli("iptables", "show", check=False).returncode == 3


def _serve_destinations(listener: socket.socket, replies: int, stop: threading.Event) -> None:
    """Answer each connection with where destination_of says it was going and who called."""
    listener.settimeout(0.2)
    while replies and not stop.is_set():
        try:
            conn, peer = listener.accept()
        except (TimeoutError, socket.timeout):
            continue
        with conn:
            conn.settimeout(5)
            conn.recv(100)
            conn.sendall((json.dumps({"dst": list(destination_of(conn)), "peer": peer[0]}) + "\n").encode())
        replies -= 1


@pytest.mark.parametrize("kind", ["nft", "legacy"])
def test_a_transparent_listener_gets_the_connection_with_its_original_destination_and_the_callers_address(
        pods: PodNetwork, kind: str) -> None:
    a, b = pods["a"], pods["b"]
    require_tproxy(b, kind)
    b.sidecar_cli(*INSTALL, "--mode", kind)
    b.start_banner_server(HEALTH_PORT, "health-b")
    with entered(b.netns):
        listener = open_listening_socket("0.0.0.0", INBOUND, transparent=True)
    stop = threading.Event()
    thread = threading.Thread(target=_serve_destinations, args=(listener, 2, stop), daemon=True)
    thread.start()
    try:
        for port in (APP_PORT, 9999):
            answer = json.loads(a.connect(b.ip, port, uid=APP_UID))
            assert answer == {"dst": [b.ip, port], "peer": a.ip}, "no NAT: the caller's address and port survive"
        assert a.connect(b.ip, HEALTH_PORT) == f"health-b from {a.ip}\n", "an excluded port reaches the app"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# --- the mesh: real agent, real sidecars, TPROXY in front of B --------------------------------------------------

CALLER_YAML = """identity: {{workload_api: "unix://{{socket}}"}}
transparent:
  outbound:
    listen: 127.0.0.1:{outbound}
    routes:
      - {{cidr: {b_ip}/32, ports: [{app}], expect: spiffe://example.org/b}}
"""
SERVER_YAML = """identity: {{workload_api: "unix://{{socket}}"}}
policy_file: policy.yaml
transparent:
  inbound:
    listen: 0.0.0.0:{inbound}
    interception: tproxy
    ports:
      - {{port: {app}, forward_to: "127.0.0.1:{app}", policy: app}}
"""
POLICY_YAML = "policies:\n  app:\n    - name: only-a\n      allow: [spiffe://example.org/a]\n"


@pytest.fixture(scope="module")
def mesh(open_mesh: Callable[[Sequence[str]], Mesh]) -> Mesh:
    m = open_mesh(["a", "b", "kubelet"])
    try:
        require_tproxy(m.net["b"])
        m.install_extra["b"] = TPROXY
        fields = dict(outbound=OUTBOUND, inbound=INBOUND, app=APP_PORT, b_ip=m.net["b"].ip)
        m.start_sidecars({"a": CALLER_YAML.format(**fields), "b": SERVER_YAML.format(**fields)}, POLICY_YAML)
        m.net["b"].start_banner_server(APP_PORT, "app-b")
        m.net["b"].start_banner_server(HEALTH_PORT, "health-b")
    except BaseException:
        print(m.logs())
        raise
    return m


def _records(mesh: Mesh, pod: str) -> list[dict[str, object]]:
    lines = (line for line in mesh.sidecar_log(pod).splitlines() if line.startswith("{"))
    return [r for r in map(json.loads, lines) if r.get("event") == "connection"]


def test_a_plain_call_to_b_crosses_bs_tproxy_listener_over_mtls_to_the_app_port_it_was_dialled_on(mesh: Mesh) -> None:
    a, b = mesh.net["a"], mesh.net["b"]
    try:
        answer = a.connect(b.ip, APP_PORT, uid=APP_UID)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{mesh.logs()}") from None
    assert answer == "app-b from 127.0.0.1\n", mesh.logs()
    routed = [r for r in _records(mesh, "b") if r["listener"] == "transparent-inbound" and r["original_port"] == APP_PORT]
    assert routed, f"B's sidecar recorded no connection routed by original port {APP_PORT}:\n{mesh.logs()}"
    record = routed[-1]
    assert record["peer_id"] == "spiffe://example.org/a" and record["decision"] == "allow"
    assert record["tls_version"] and not record["plaintext"] and int(str(record["bytes_in"])) > 0


def test_strict_tproxy_inbound_refuses_plaintext_and_the_excluded_health_port_stays_direct(mesh: Mesh) -> None:
    b, kubelet = mesh.net["b"], mesh.net["kubelet"]
    answer = kubelet.try_connect(b.ip, APP_PORT)
    assert "app-b" not in answer, "plaintext must not reach the app past a strict TPROXY listener"
    assert kubelet.connect(b.ip, HEALTH_PORT) == f"health-b from {kubelet.ip}\n"


def test_remove_leaves_no_mangle_rules_ip_rules_or_routes_and_restores_direct_connectivity(mesh: Mesh) -> None:
    b, kubelet = mesh.net["b"], mesh.net["kubelet"]
    b.sidecar_cli("iptables", "remove")
    for kind in ("nft", "legacy"):
        for tool in ("iptables", "ip6tables"):
            assert "SPIFFE" not in b.run([f"{tool}-{kind}-save"]).stdout
    for family in ("-4", "-6"):
        assert "0x539" not in b.run(["ip", family, "rule", "show"]).stdout
        assert "table 133" not in b.run(["ip", family, "route", "show", "table", "all"]).stdout
    assert kubelet.connect(b.ip, APP_PORT) == f"app-b from {kubelet.ip}\n"


