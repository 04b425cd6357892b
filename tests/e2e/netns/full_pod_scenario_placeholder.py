"""PLACEHOLDER, NOT IN THE SUITE (pytest collects only test_*.py): transparent ROUTING between pods.

test_mesh_pods.py already runs the pod scenario of issue 4 with the real agent and
sidecars (A's app -> A's sidecar -> mTLS on the veth -> B's sidecar -> B's app; C
refused; health port direct; remove restores direct paths), but with plain listeners
on the redirect ports: A's outbound listener has exactly ONE upstream and B's inbound
listener ONE app port. This file is the next step: the sidecars route by the original
destination, so one outbound listener serves every destination and one inbound
listener serves every app port, and permissive mode lets plaintext in beside mTLS.

    pod A: app --plain--> B:8080 and B:9090 --> [iptables] --> sidecar A :15001 (routes by SO_ORIGINAL_DST)
    pod B: [iptables] --> sidecar B :15006 (port 8080 -> 127.0.0.1:8080 policy app; 9090 -> 127.0.0.1:9090 policy app)

When the data plane exposes what is listed below, rename this file to
test_transparent_routing_pods.py, replace the PLANNED keys with the real ones, and
delete this paragraph.

What the data plane must add (all inside proxy/config and proxy/connection|runtime):

1. A `transparent:` section in sidecar.yaml (keys as planned in
   examples/kubernetes/configmap.yaml and docs/transparent-mode.md):
   - transparent.inbound.listen (0.0.0.0:15006; NOT loopback: PREROUTING REDIRECT
     rewrites the destination to the pod's primary address of the incoming interface),
     transparent.inbound.mode strict|permissive (model.InboundMode exists),
     transparent.inbound.ports: original destination port -> forward_to (loopback app
     port) + policy name; an unmapped port is refused (or a default entry).
   - transparent.outbound.listen (127.0.0.1:15001: OUTPUT REDIRECT lands on 127.0.0.1),
     transparent.outbound.unmatched refuse|passthrough (model.Unmatched exists),
     transparent.outbound.routes: match by destination host:port, CIDR and/or port ->
     expect (a PeerMatcher, same syntax as outbound[].expect).
2. The inbound transparent listener calls
   proxy.interception.original_dst.original_destination(sock) on each accepted socket
   BEFORE the handshake (it is a getsockopt on the fd: the runtime driver must call it
   and pass (ip, port) into the core as part of the accept event), picks the route by
   port, and in permissive mode peeks (MSG_PEEK, bounded by the handshake timeout)
   for 6 bytes and calls peek_is_tls_client_hello() to choose mTLS or plain forward.
3. The outbound transparent listener calls original_destination(sock), looks the
   destination up in routes, and dials THE ORIGINAL DESTINATION (ip:port) with mTLS,
   requiring `expect`; with no route: refuse (close, log reason) or passthrough
   (plain TCP to the original destination). The sidecar's own sockets are exempt
   from interception only because the sidecar runs as --proxy-uid (or --proxy-gid): nothing to do in
   code, but `run` should log its uid and warn when it is 0.
4. The sidecar must never dial its own listener ports (loop guard): refuse an
   original destination equal to one of its own listen addresses.
5. Identity in this harness: the agent attests over its Unix socket and all pods share
   one filesystem, so each pod's sidecar needs its own selector. This machine's Python
   is unreadable by other uids (/root is 0700), so the sidecars keep uid 0 and get
   their own gid (A 1337, B 1338, C 1339): agent entries use unix:gid, and the rules
   use --proxy-gid (see test_mesh_pods.py, which does exactly this).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.netns import PodNetwork, require_netns, sweep_stale

pytestmark = [pytest.mark.netns, pytest.mark.slow]

APP_PORT, METRICS_PORT, INBOUND, OUTBOUND = 8080, 9090, 15006, 15001
GIDS = {"a": 1337, "b": 1338}

AGENT_YAML = """socket_path: {socket}
socket_mode: "0777"
trust_domains: [{{name: example.org}}]
entries:
  - {{spiffe_id: spiffe://example.org/a, selectors: ["unix:gid:1337"]}}
  - {{spiffe_id: spiffe://example.org/b, selectors: ["unix:gid:1338"]}}
"""

# PLANNED keys (transparent:): adjust to what proxy/config/load.py finally accepts.
SIDECAR_YAML = """identity: {{workload_api: "unix://{socket}"}}
policy_file: policy.yaml
transparent:
  inbound:
    listen: 0.0.0.0:{inbound}
    mode: permissive                 # plaintext from unmeshed clients reaches the app during migration
    ports:
      - {{port: {app}, forward_to: "127.0.0.1:{app}", policy: app}}
      - {{port: {metrics}, forward_to: "127.0.0.1:{metrics}", policy: app}}
  outbound:
    listen: 127.0.0.1:{outbound}
    unmatched: refuse
    routes:
      - {{cidr: {b_ip}/32, ports: [{app}, {metrics}], expect: spiffe://example.org/b}}
"""

POLICY_YAML = "policies:\n  app:\n    - name: only-a\n      allow: [spiffe://example.org/a]\n"


def test_one_listener_pair_routes_every_destination_by_its_original_address(tmp_path: Path) -> None:
    require_netns(("ip", "iptables", "setpriv"))
    sweep_stale()
    (tmp_path / "agent.yaml").write_text(AGENT_YAML.format(socket=tmp_path / "agent.sock"))
    procs: list[subprocess.Popen[bytes]] = []
    with PodNetwork(["a", "b", "c", "kubelet"]) as net:
        try:
            procs.append(subprocess.Popen([sys.executable, "-m", "proxy", "agent", "--config", str(tmp_path / "agent.yaml")]))
            for name in ("a", "b"):
                pod, work = net[name], tmp_path / name
                work.mkdir()
                (work / "sidecar.yaml").write_text(SIDECAR_YAML.format(
                    socket=tmp_path / "agent.sock", inbound=INBOUND, outbound=OUTBOUND, app=APP_PORT,
                    metrics=METRICS_PORT, b_ip=net["b"].ip))
                (work / "policy.yaml").write_text(POLICY_YAML)
                pod.sidecar_cli("iptables", "install", "--proxy-gid", str(GIDS[name]))
                procs.append(subprocess.Popen(["ip", "netns", "exec", pod.netns, "setpriv", f"--regid={GIDS[name]}",
                                               "--clear-groups", "--", sys.executable, "-m", "proxy", "run",
                                               "--config", str(work / "sidecar.yaml")]))
            net["b"].start_banner_server(APP_PORT, "app-b")
            net["b"].start_banner_server(METRICS_PORT, "app-b-metrics")
            net["c"].start_banner_server(7070, "app-c")
            time.sleep(3)  # TODO: poll each sidecar's "ready:" line or /ready
            a, b = net["a"], net["b"]
            # one outbound listener, two destinations, each verified as spiffe://example.org/b
            assert a.connect(b.ip, APP_PORT, uid=1000) == "app-b from 127.0.0.1\n"
            assert a.connect(b.ip, METRICS_PORT, uid=1000) == "app-b-metrics from 127.0.0.1\n"
            # no route for C:7070 and unmatched: refuse
            assert "app-c" not in a.run([sys.executable, "-c", "import socket; s=socket.create_connection(('%s', 7070), 5); "
                                          "s.sendall(b'x'); print(s.recv(64))" % net["c"].ip], uid=1000, check=False).stdout
            # permissive: an unmeshed plaintext client reaches B's app through B's sidecar
            assert net["kubelet"].connect(b.ip, APP_PORT) == "app-b from 127.0.0.1\n"
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                proc.wait(10)
