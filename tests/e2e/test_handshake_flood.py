"""Issue 11.5: connections that never finish their handshake must not starve everyone else.

Real sidecar processes, real sockets: an attacker holds idle TCP
connections that never send a ClientHello. Legitimate clients must still
get through, established connections must keep relaying, refusals are
logged at a bounded rate, and the memory a flood took is given back.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from support import pki
from support.net import EchoServer, free_port
from support.sidecar import FRONTEND, Identity, Peer, SidecarHarness, eventually, fastpath_available, read_exactly

ATTACKER = "127.0.0.2"  # loopback too, but another source address than the legitimate clients


@contextlib.contextmanager
def idle_sockets(port: int, count: int, source: str = ATTACKER) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections to ``port`` that never send a byte (closed on exit)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def _sidecar(tmp_path: Path, ca: pki.Ca, runtime: str, engine: str, port: int, app: int,
             limits: dict[str, object]) -> SidecarHarness:
    if engine == "fastpath" and not fastpath_available():
        pytest.skip("the compiled engine is not built")
    return SidecarHarness(tmp_path, runtime=runtime, engine=engine, admin=True,
                          identity=Identity.mint(tmp_path, ca, "/backend"),
                          inbound=[{"name": "in", "listen": f"127.0.0.1:{port}", "forward_to": f"127.0.0.1:{app}",
                                    "policy": "p"}],
                          policy={"p": [{"name": "frontend", "allow": [FRONTEND]}]}, limits=limits,
                          extra={"log": {"level": "info", "access": "off"}})


@pytest.mark.parametrize("runtime, engine", [("trio", "fastpath"), ("uvloop", "python")])
def test_idle_sockets_from_one_source_lock_out_no_one(tmp_path: Path, ca: pki.Ca, runtime: str, engine: str) -> None:
    echo, port = EchoServer(), free_port()
    limits = {"max_connections": 200, "max_pending_handshakes": 100, "max_pending_handshakes_per_source": 20,
              "handshake_timeout": "60s"}
    peer = Peer(tmp_path, ca, FRONTEND)
    with _sidecar(tmp_path, ca, runtime, engine, port, echo.port, limits) as sidecar:
        established = peer.connect(port)
        established.sendall(b"before")
        assert read_exactly(established, 6) == b"before"
        with idle_sockets(port, 300):  # more than max_connections, all from one address
            eventually(lambda: sidecar.metric("spiffe_sidecar_connections_refused_at_accept_total") >= 250, 10,
                       "the flood beyond the per-source limit is refused at accept")
            assert sidecar.metric("spiffe_sidecar_handshakes_pending", listener="in") == 20
            assert peer.echo(port, b"legitimate"), "a legitimate client was locked out by the flood"
            established.sendall(b"during")
            assert read_exactly(established, 6) == b"during", "an established connection stopped relaying"
        established.close()
        refusals = [line for line in sidecar.log().splitlines() if "refused" in line and "at accept" in line]
    echo.close()
    assert len(refusals) == 1, refusals  # rate-limited: hundreds of refusals, one line


@pytest.mark.parametrize("runtime, engine", [("trio", "fastpath"), ("uvloop", "python")])
def test_a_flood_of_idle_sockets_costs_little_and_its_memory_is_reused(tmp_path: Path, ca: pki.Ca, runtime: str,
                                                                       engine: str) -> None:
    """2,000 sockets that never send a ClientHello, twice: no TLS state is built for them, so RSS grows
    by a fraction of what it did (86 MiB kept before), and a second flood reuses the first one's memory."""
    echo, port = EchoServer(), free_port()
    limits = {"max_pending_handshakes": 4096, "max_pending_handshakes_per_source": 4096, "handshake_timeout": "60s"}
    peer = Peer(tmp_path, ca, FRONTEND)
    rss: list[int] = []
    with _sidecar(tmp_path, ca, runtime, engine, port, echo.port, limits) as sidecar:
        for _ in range(20):  # warm up: imports, the first TLS contexts and connections
            assert peer.echo(port)
        time.sleep(0.5)
        rss.append(sidecar.rss_kib())
        for _ in range(2):
            with idle_sockets(port, 2000):
                eventually(lambda: sidecar.metric("spiffe_sidecar_connections_active", listener="in") >= 2000, 20,
                           "the sidecar holds the 2,000 idle connections")
            eventually(lambda: sidecar.metric("spiffe_sidecar_connections_active", listener="in") == 0, 20,
                       "the sidecar let the closed idle connections go")
            time.sleep(0.5)
            rss.append(sidecar.rss_kib())
        assert peer.echo(port)
    echo.close()
    first_mib, second_mib = (rss[1] - rss[0]) / 1024, (rss[2] - rss[1]) / 1024
    assert first_mib < 24, f"{engine}/{runtime}: RSS {rss} KiB: {first_mib:.1f} MiB kept after the first flood"
    assert second_mib < 4, f"{engine}/{runtime}: RSS {rss} KiB: a second flood grew it by {second_mib:.1f} MiB"
