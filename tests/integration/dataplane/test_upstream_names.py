"""Upstreams named by host name: resolved off the event loop, every address tried in order."""

from __future__ import annotations

import socket

from proxy.connection.machine import Direction
from proxy.errors import CloseReason
from support.net import EchoServer, recv_all
from support.sidecar import Plane


def test_an_upstream_named_by_host_name_is_resolved_and_reached(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port, upstream_host="localhost")
    plane.start()
    with socket.create_connection(("127.0.0.1", plane.port("out")), timeout=10) as sock:
        sock.sendall(b"by name")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"by name"
    record = plane.wait_record(lambda r: r.listener == "out")
    assert record.close_reason is CloseReason.COMPLETED and record.peer_id == "spiffe://example.org/backend"


def test_an_upstream_refusing_on_every_address_names_each_attempt(plane: Plane) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    plane.add("out", Direction.OUTBOUND, dead, upstream_host="localhost")
    plane.start()
    with socket.create_connection(("127.0.0.1", plane.port("out")), timeout=10) as sock:
        assert recv_all(sock) == b"", "nothing may be relayed when the upstream cannot be reached"
    record = plane.wait_record(lambda r: r.listener == "out")
    assert record.close_reason is CloseReason.UPSTREAM_CONNECT_FAILED
    assert f"localhost:{dead}" in record.detail and "127.0.0.1: ECONNREFUSED" in record.detail
