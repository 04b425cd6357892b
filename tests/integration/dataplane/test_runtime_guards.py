"""The runtimes' own guards: a broken connection setup, a TimeoutError that is not the deadline, an early stop."""

from __future__ import annotations

import socket

from proxy.connection.machine import ConnectionSpec, Direction
from support.net import EchoServer, recv_all
from support.sidecar import Plane


def roundtrip(port: int, payload: bytes = b"ping", timeout: float = 5) -> bytes:
    """Send, half-close, read to EOF; a refused, reset or unanswered connection reads as b""."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
        except OSError:
            return b""


def test_a_connection_whose_setup_raises_costs_that_connection_not_the_data_plane(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    plane.add("other", Direction.INBOUND, echo.port)
    original = plane.plans["out"].spec
    calls = []

    def spec_raising_once(dst: tuple[str, int] | None) -> ConnectionSpec:
        calls.append(dst)
        if len(calls) == 1:
            raise RuntimeError("a bug in building the spec")
        return original(dst)

    plane.plans["out"].spec = spec_raising_once
    plane.start()
    assert roundtrip(plane.port("out")) == b""  # closed, not left hanging
    assert roundtrip(plane.port("out")) == b"ping"  # the listener (and "in" behind it) still serve
    assert roundtrip(plane.port("other"), b"not a ClientHello") == b""  # refused by closing, with a record:
    assert plane.wait_record(lambda r: r.listener == "other")  # the other listener still serves too
    echo.close()
