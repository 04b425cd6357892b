"""Transparent listeners without iptables: what SO_ORIGINAL_DST cannot tell.

A connection nobody redirected was meant for the listener it reached, so:
the permissive inbound listener routes it by its own port (mTLS for a
ClientHello, plaintext otherwise), and the outbound listener refuses it as a
loop. Routing by a redirected destination runs in the netns suite
(tests/e2e/netns).

The permissive inbound listener binds every address and forwards plaintext,
so the sidecars, the echo app and every client run inside a network
namespace this module creates (support.netns.PodNetwork), never in the
host's own: processes spawned and sockets made under ``entered(pod)`` stay
in the pod. Needs root (CAP_SYS_ADMIN) but no iptables or conntrack.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Iterator

import pytest

from support import pki
from support.net import EchoServer, free_port, recv_all
from support.netns import Pod, PodNetwork, entered, require_netns, sweep_stale
from support.sidecar import Identity, SidecarHarness, running

FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    """A network namespace of our own: the only place the wildcard listener may bind."""
    require_netns(("ip",))
    sweep_stale()
    with PodNetwork(["transparent"]) as net:
        yield net["transparent"]


@pytest.fixture(scope="module")
def mesh(module_combo: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, ca: pki.Ca,
         pod: Pod) -> Iterator[dict[str, Any]]:
    runtime, engine = module_combo
    d = tmp_path_factory.mktemp(f"transparent-{runtime}-{engine}")
    with contextlib.ExitStack() as stack:
        with entered(pod.netns):  # ports, the echo app and both sidecars are made inside the pod
            echo = EchoServer()
            stack.callback(echo.close)
            tin, tout, out = free_port(), free_port(), free_port()
            backend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"),
                                     name="backend", admin=True, policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]},
                                     extra={"transparent": {"inbound": {
                                         "listen": f"0.0.0.0:{tin}", "mode": "permissive",
                                         "ports": [{"port": tin, "forward_to": f"127.0.0.1:{echo.port}",
                                                    "policy": "api"}]}}})
            frontend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/frontend"),
                                      name="frontend", outbound=[{"name": "to-backend", "listen": f"127.0.0.1:{out}",
                                                                  "connect_to": f"127.0.0.1:{tin}", "expect": BACKEND}],
                                      extra={"transparent": {"outbound": {
                                          "listen": f"127.0.0.1:{tout}", "unmatched": "passthrough",
                                          "routes": [{"cidr": "10.0.0.0/8", "expect": BACKEND}]}}})
            stack.enter_context(running(backend, frontend))
        yield {"backend": backend, "frontend": frontend, "tin": tin, "tout": tout, "out": out, "pod": pod}


def exchange(pod: Pod, port: int, payload: bytes) -> bytes:
    """Inside the pod: send, half-close, read to EOF; a connection refused at once reads as b""."""
    with entered(pod.netns):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
        except OSError:  # reset, or not connected any more
            return b""


def test_permissive_inbound_takes_mtls_for_a_client_hello(mesh: dict[str, Any]) -> None:
    assert exchange(mesh["pod"], mesh["out"], b"over mtls") == b"over mtls"
    rec = mesh["backend"].wait_record(lambda r: r["peer_id"] == FRONTEND)
    assert rec["listener"] == "transparent-inbound" and rec["original_port"] == mesh["tin"]
    assert rec["decision"] == "allow"
    assert rec["plaintext"] is False and rec["tls_version"]


def test_transparent_inbound_metrics_carry_one_listener_label_whatever_the_original_port(mesh: dict[str, Any]) -> None:
    """connections_opened (counted per listener plan) and the per-record metrics must join on the same label."""
    assert exchange(mesh["pod"], mesh["out"], b"count me") == b"count me"
    backend = mesh["backend"]
    backend.wait_record(lambda r: r["peer_id"] == FRONTEND)
    with entered(mesh["pod"].netns):  # the admin endpoint listens inside the pod
        samples = backend.metrics()
    listeners = {dict(labels)["listener"] for _, labels in samples if "listener" in dict(labels)}
    assert listeners == {"transparent-inbound"}, samples
    for name in ("spiffe_sidecar_connections_opened_total", "spiffe_sidecar_connections_closed_total",
                 "spiffe_sidecar_authz_decisions_total"):
        assert sum(v for (n, ls), v in samples.items() if n == name and ("listener", "transparent-inbound") in ls) >= 1


def test_permissive_inbound_forwards_plaintext_beside_mtls(mesh: dict[str, Any]) -> None:
    assert exchange(mesh["pod"], mesh["tin"], b"GET / HTTP/1.1\r\n\r\n") == b"GET / HTTP/1.1\r\n\r\n"
    rec = mesh["backend"].wait_record(lambda r: r["plaintext"] is True)
    assert rec["peer_id"] is None and rec["close_reason"] == "completed" and rec["bytes_in"] == 18


def test_transparent_outbound_refuses_a_connection_to_itself(mesh: dict[str, Any]) -> None:
    assert exchange(mesh["pod"], mesh["tout"], b"loop?") == b""
    rec = mesh["frontend"].wait_record(lambda r: r["listener"] == "transparent-outbound")
    assert rec["close_reason"] == "loop" and "loop" in rec["detail"]
