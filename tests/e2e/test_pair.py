"""A frontend sidecar (outbound) and a backend sidecar (inbound) as real processes, on every combination.

One pair per runtime x engine is shared by the tests of this module: the
backend sidecar fronts three apps (echo, a "speaker" that closes its side
first, a reader that never reads); the frontend sidecar has an outbound
listener to each, plus one whose ``expect`` names somebody else.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from support import pki
from support.net import EchoServer, free_port, recv_all
from support.sidecar import Identity, SidecarHarness, running

FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"


class Speaker:
    """An app that talks first and closes its write side, then reads the client's bytes to EOF."""

    GREETING = b"greeting-" * 10000

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.GREETING)
                conn.shutdown(socket.SHUT_WR)
                self.received.append(hashlib.sha256(recv_all(conn, 1 << 30)).hexdigest())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def pair(module_combo: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, ca: pki.Ca) -> Iterator[dict[str, Any]]:
    runtime, engine = module_combo
    d = tmp_path_factory.mktemp(f"pair-{runtime}-{engine}")
    apps = {"echo": EchoServer(), "speaker": Speaker(), "slow": EchoServer(read=False)}
    b_ports = {name: free_port() for name in apps}
    a_ports = {name: free_port() for name in (*apps, "wrong")}
    inbound = [{"name": f"{n}-in", "listen": f"127.0.0.1:{b_ports[n]}", "forward_to": f"127.0.0.1:{app.port}",
                "policy": "api"} for n, app in apps.items()]
    outbound = [{"name": f"{n}-out", "listen": f"127.0.0.1:{a_ports[n]}", "connect_to": f"127.0.0.1:{b_ports[n]}",
                 "expect": BACKEND} for n in apps]
    outbound.append({"name": "wrong-out", "listen": f"127.0.0.1:{a_ports['wrong']}",
                     "connect_to": f"127.0.0.1:{b_ports['echo']}", "expect": "spiffe://example.org/payments"})
    backend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"),
                             inbound=inbound, name="backend",
                             policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    frontend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/frontend"),
                              outbound=outbound, name="frontend")
    with running(backend, frontend):
        yield {"a": frontend, "b": backend, "a_ports": a_ports, "apps": apps, "b_ports": b_ports}
    for app in apps.values():
        app.close()


def test_pair_relays_with_half_close_from_the_client(pair: dict[str, Any]) -> None:
    payload = os.urandom(3 << 20)
    with socket.create_connection(("127.0.0.1", pair["a_ports"]["echo"]), timeout=20) as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
        sender.start()
        echoed = recv_all(sock, 1 << 30)
        sender.join(20)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    rec = pair["a"].wait_record(lambda r: r["listener"] == "echo-out" and r["bytes_out"] == len(payload))
    assert rec["close_reason"] == "completed" and rec["peer_id"] == BACKEND
    rec = pair["b"].wait_record(lambda r: r["listener"] == "echo-in" and r["bytes_in"] == len(payload))
    assert rec["peer_id"] == FRONTEND and rec["bytes_out"] == len(payload)


def test_pair_relays_with_half_close_from_the_app(pair: dict[str, Any]) -> None:
    speaker: Speaker = pair["apps"]["speaker"]
    payload = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", pair["a_ports"]["speaker"]), timeout=20) as sock:
        assert recv_all(sock) == Speaker.GREETING  # the app closed its side: EOF reached us...
        sock.sendall(payload)  # ...and our side still flows
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b""
    deadline = time.monotonic() + 10
    while not speaker.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert speaker.received[-1] == hashlib.sha256(payload).hexdigest()


def test_outbound_refuses_an_upstream_that_is_not_expected(pair: dict[str, Any]) -> None:
    echo: EchoServer = pair["apps"]["echo"]
    with socket.create_connection(("127.0.0.1", pair["a_ports"]["wrong"]), timeout=10) as sock:
        sock.sendall(b"must not arrive")
        try:
            got = recv_all(sock)
        except ConnectionResetError:
            got = b""
    assert got == b""
    rec = pair["a"].wait_record(lambda r: r["listener"] == "wrong-out")
    assert (rec["decision"], rec["reason"], rec["close_reason"]) == ("deny", "unexpected_peer", "denied")
    assert rec["peer_id"] == BACKEND and "spiffe://example.org/payments" in rec["detail"]
    assert rec["bytes_out"] == 0


def test_garbage_instead_of_a_client_hello_is_dropped_without_harming_others(pair: dict[str, Any]) -> None:
    good = socket.create_connection(("127.0.0.1", pair["a_ports"]["echo"]), timeout=10)
    good.sendall(b"before ")
    with socket.create_connection(("127.0.0.1", pair["b_ports"]["echo"]), timeout=10) as bad:
        bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        try:
            assert recv_all(bad) == b""
        except ConnectionResetError:
            pass
    rec = pair["b"].wait_record(lambda r: r["listener"] == "echo-in" and r["close_reason"] == "handshake_failed")
    assert rec["peer_id"] is None and rec["reason"] in ("not_tls", "protocol")
    good.sendall(b"after")
    good.shutdown(socket.SHUT_WR)
    assert recv_all(good) == b"before after"
    good.close()


def test_slow_reader_keeps_sidecar_memory_bounded(pair: dict[str, Any]) -> None:
    a, b = pair["a"], pair["b"]
    rss_before = a.rss_kib() + b.rss_kib()
    sent = 0
    chunk = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", pair["a_ports"]["slow"]), timeout=10) as sock:
        sock.settimeout(2.0)
        deadline = time.monotonic() + 8
        try:
            while time.monotonic() < deadline and sent < (256 << 20):
                sent += sock.send(chunk)
        except (socket.timeout, BlockingIOError):
            pass  # backpressure reached us: the sidecars stopped reading
        growth_mib = (a.rss_kib() + b.rss_kib() - rss_before) / 1024
    assert sent < (64 << 20), f"{sent >> 20} MiB accepted: no backpressure"
    assert growth_mib < 24, f"sidecars grew by {growth_mib:.1f} MiB with a reader that never reads"
