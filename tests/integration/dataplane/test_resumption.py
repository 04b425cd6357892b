"""TLS 1.3 resumption never replaces the identity check: expect is re-checked on resumed sessions."""

from __future__ import annotations

import socket

from proxy.connection.machine import Direction
from proxy.connection.verify import check_expected_peer
from proxy.errors import CloseReason, DenyReason
from proxy.policy.match import compile_matcher
from support.net import EchoServer, recv_all
from support.sidecar import BACKEND, Plane


def roundtrip(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
        except OSError:
            return b""


def test_a_resumed_session_is_still_checked_against_expect(plane: Plane) -> None:
    echo = EchoServer()
    plane.add("in", Direction.INBOUND, echo.port)
    backend, payments = compile_matcher([BACKEND]), compile_matcher(["spiffe://example.org/payments"])
    key = f"127.0.0.1:{plane.port('in')}"
    plane.add("right", Direction.OUTBOUND, plane.port("in"), session_key=key,
              authorize=lambda peer: check_expected_peer(peer, backend, "right"))
    plane.add("wrong", Direction.OUTBOUND, plane.port("in"), session_key=key,
              authorize=lambda peer: check_expected_peer(peer, payments, "wrong"))
    plane.start()

    def finished(listener: str, count: int) -> None:
        # A session is cached when its connection ends, which is just after the app saw EOF.
        plane.wait_record(lambda r: len([x for x in plane.records if x.listener == listener]) == count)

    assert roundtrip(plane.port("right")) == b"ping"
    finished("right", 1)
    assert roundtrip(plane.port("right")) == b"ping"
    finished("right", 2)
    assert roundtrip(plane.port("wrong")) == b""
    wrong = plane.wait_record(lambda r: r.listener == "wrong")
    right = sorted((r for r in plane.records if r.listener == "right"), key=lambda r: r.start)
    # The reference engine's server keeps no sessions (issue 11.1): there, every handshake is a full one.
    resumes = plane.engine.NAME == "fastpath"
    assert [r.resumed for r in right] == [False, resumes]
    assert wrong.resumed is resumes and wrong.close_reason is CloseReason.DENIED
    assert wrong.reason is DenyReason.UNEXPECTED_PEER
    echo.close()


def test_a_listener_with_session_resumption_off_makes_full_handshakes_only(plane: Plane) -> None:
    """``tls.session_resumption: false`` (benchmarks' full-handshake figures): nothing is offered or resumed."""
    echo = EchoServer()
    backend = compile_matcher([BACKEND])
    plane.add("in", Direction.INBOUND, echo.port)
    plane.add("full", Direction.OUTBOUND, plane.port("in"), session_key=f"127.0.0.1:{plane.port('in')}",
              authorize=lambda peer: check_expected_peer(peer, backend, "full"), session_resumption=False)
    plane.start()
    for n in range(1, 4):
        assert roundtrip(plane.port("full")) == b"ping"
        plane.wait_record(lambda r: len([x for x in plane.records if x.listener == "full"]) == n)
    assert [r.resumed for r in plane.records if r.listener == "full"] == [False, False, False]
    echo.close()
