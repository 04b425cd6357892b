"""The relay: bytes arrive intact both ways, EOF is forwarded as a half-close, a slow reader blocks the writer.

Topology, all real sockets: client app <-> [client Relay | TLS | server Relay] <-> server app.
The apps are blocking sockets in threads; the relays are driven by a
select() loop that waits for exactly what each direction asked for.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import select
import socket
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

MIB = 1024 * 1024


@dataclass
class Lane:
    """One relay direction: its pump and the socket each status waits on."""

    pump: Callable[[], int]
    tls: socket.socket
    plain: socket.socket
    status: int = -1


@dataclass
class Topology:
    engine: Any
    relays: tuple[Any, Any]  # client side, server side
    client_app: socket.socket
    server_app: socket.socket
    server_tls: socket.socket
    lanes: list[Lane] = field(default_factory=list)

    def step(self, timeout: float = 0.05) -> None:
        """Call every unfinished lane once, then wait for what they asked for."""
        e = self.engine
        readers, writers = [], []
        for lane in self.lanes:
            if lane.status == e.EOF:
                continue
            lane.status = lane.pump()
            want = {e.WANT_TLS_READ: (readers, lane.tls), e.WANT_TLS_WRITE: (writers, lane.tls),
                    e.WANT_PLAIN_READ: (readers, lane.plain), e.WANT_PLAIN_WRITE: (writers, lane.plain)}
            if lane.status in want:
                bucket, sock = want[lane.status]
                bucket.append(sock)
        if readers or writers:
            select.select(readers, writers, [], timeout)

    def run_until(self, done: Callable[[], bool], deadline: float = 60.0) -> None:
        end = time.monotonic() + deadline
        while not done():
            assert time.monotonic() < end, [lane.status for lane in self.lanes]
            self.step()

    def all_eof(self) -> bool:
        return all(lane.status == self.engine.EOF for lane in self.lanes)


@pytest.fixture
def topology(engine, harness, test_pki, server_leaf, client_leaf):
    def build(buffer_size: int = 65536) -> Topology:
        est = harness.connect(engine.ServerContext(test_pki.material(server_leaf)),
                              engine.ClientContext(test_pki.material(client_leaf)))
        c_plain, c_app = harness.pair()
        s_plain, s_app = harness.pair()
        for app in (c_app, s_app):
            app.setblocking(True)
        c_relay = engine.Relay(est.client, c_plain.fileno(), buffer_size)
        s_relay = engine.Relay(est.server, s_plain.fileno(), buffer_size)
        topo = Topology(engine, (c_relay, s_relay), c_app, s_app, est.server_sock)
        topo.lanes = [Lane(c_relay.plain_to_tls, est.client_sock, c_plain),
                      Lane(c_relay.tls_to_plain, est.client_sock, c_plain),
                      Lane(s_relay.plain_to_tls, est.server_sock, s_plain),
                      Lane(s_relay.tls_to_plain, est.server_sock, s_plain)]
        return topo

    return build


def _send_then_close(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def _read_to_eof(sock: socket.socket, sink: list[bytes]) -> None:
    while chunk := sock.recv(256 * 1024):
        sink.append(chunk)


def _start(*targets: tuple[Callable[..., None], tuple[Any, ...]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in targets]
    for t in threads:
        t.start()
    return threads


def test_relay_moves_16_mib_each_way_byte_identical(topology):
    topo = topology()
    up, down = os.urandom(16 * MIB + 12345), os.urandom(16 * MIB + 777)
    got_up: list[bytes] = []
    got_down: list[bytes] = []
    threads = _start((_send_then_close, (topo.client_app, up)), (_send_then_close, (topo.server_app, down)),
                     (_read_to_eof, (topo.server_app, got_up)), (_read_to_eof, (topo.client_app, got_down)))
    topo.run_until(topo.all_eof)
    for t in threads:
        t.join(10)
    assert hashlib.sha256(b"".join(got_up)).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(b"".join(got_down)).digest() == hashlib.sha256(down).digest()
    c_relay, s_relay = topo.relays
    assert c_relay.bytes_plain_to_tls == s_relay.bytes_tls_to_plain == len(up)
    assert s_relay.bytes_plain_to_tls == c_relay.bytes_tls_to_plain == len(down)


@pytest.mark.parametrize("first", ["client", "server"])
def test_half_close_lets_the_other_direction_keep_flowing(topology, first):
    """The side that finishes sending first still receives a whole answer afterwards."""
    topo = topology()
    asker, answerer = (topo.client_app, topo.server_app) if first == "client" else (topo.server_app, topo.client_app)
    question, answer = os.urandom(3 * MIB), os.urandom(5 * MIB)
    heard: list[bytes] = []
    replies: list[bytes] = []

    def answer_after_eof() -> None:
        _read_to_eof(answerer, heard)  # returns only once the asker's EOF came through
        _send_then_close(answerer, answer)

    threads = _start((_send_then_close, (asker, question)), (answer_after_eof, ()), (_read_to_eof, (asker, replies)))
    topo.run_until(topo.all_eof)
    for t in threads:
        t.join(10)
    assert b"".join(heard) == question
    assert b"".join(replies) == answer


def _unread(sock: socket.socket) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def test_slow_reader_stops_the_relay_reading_tls(topology):
    """Backpressure: with the server app not reading, the server relay stops reading TLS; nothing piles up."""
    buffer_size = 16 * 1024
    topo = topology(buffer_size)
    data = os.urandom(32 * MIB)
    writer = _start((_send_then_close, (topo.client_app, data)))[0]
    e = topo.engine
    c_relay, s_relay = topo.relays
    s_down = topo.lanes[3]
    # Pump until the server relay's plain side is full and it asks to wait for it.
    topo.run_until(lambda: s_down.status == e.WANT_PLAIN_WRITE, deadline=10)
    delivered = s_relay.bytes_tls_to_plain
    for _ in range(20):
        topo.step(timeout=0.01)
    assert s_down.status == e.WANT_PLAIN_WRITE
    assert s_relay.bytes_tls_to_plain == delivered, "the relay kept reading TLS for a reader that does not read"
    assert _unread(topo.server_tls) > 0, "unread TLS stays in the kernel, not in the relay"
    assert writer.is_alive(), "the app's writes are blocked end to end"
    in_flight = c_relay.bytes_plain_to_tls - delivered
    assert in_flight < len(data) // 2
    # Now the reader reads: everything arrives.
    got: list[bytes] = []
    reader = _start((_read_to_eof, (topo.server_app, got)))[0]
    topo.lanes = topo.lanes[:1] + topo.lanes[3:]  # only the client->server path carries data here
    topo.run_until(topo.all_eof)
    writer.join(10)
    reader.join(10)
    assert b"".join(got) == data


def test_relay_on_a_closed_connection_raises_tls_error(engine, harness, test_pki, server_leaf, client_leaf):
    from proxy.errors import TlsError

    est = harness.connect(engine.ServerContext(test_pki.material(server_leaf)),
                          engine.ClientContext(test_pki.material(client_leaf)))
    plain, _ = harness.pair()
    relay = engine.Relay(est.client, plain.fileno())
    est.client.close()
    with pytest.raises(TlsError):
        relay.tls_to_plain()
    with pytest.raises(TlsError):
        relay.plain_to_tls()


def test_relay_forwards_a_peer_that_vanishes_without_close_notify_as_eof(topology):
    """A peer process that dies (TCP FIN, no close_notify) still ends the stream for the app."""
    topo = topology()
    c_relay, _ = topo.relays
    topo.server_tls.shutdown(socket.SHUT_RDWR)  # the server side goes away at the TCP level
    lane = topo.lanes[1]  # client: TLS -> plain
    topo.run_until(lambda: lane.status == topo.engine.EOF, deadline=5)
    topo.client_app.settimeout(2)
    assert topo.client_app.recv(10) == b""  # the app sees EOF
    assert c_relay.bytes_tls_to_plain == 0
