"""Deadlines, limits and fail-closed behaviour of the data plane, on every runtime x engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket

import pytest
import time

from proxy.connection.machine import Direction
from proxy.errors import CloseReason, HandshakeFailure, Verdict, VerifyFailure
from support import pki
from support.net import EchoServer, recv_all

from support.sidecar import Plane, eventually, material


def roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    """Send, half-close, read to EOF; a refused connection reads as b"" (EOF or reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
        except (ConnectionResetError, BrokenPipeError, OSError):
            return b""


def test_not_ready_fails_closed_until_an_identity_arrives(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    server, client = plane.contexts.pop("server"), plane.contexts.pop("client")
    plane.start()
    assert roundtrip(plane.port("out")) == b""
    assert plane.wait_record(lambda r: r.listener == "out").close_reason is CloseReason.NOT_READY
    assert echo.accepted == 0
    plane.contexts.update(server=server, client=client)
    assert roundtrip(plane.port("out")) == b"ping"
    echo.close()


def test_handshake_deadline_closes_a_silent_client(plane: Plane) -> None:
    plane.add("in", Direction.INBOUND, 1, handshake_timeout=0.3)
    plane.start()
    with socket.create_connection(("127.0.0.1", plane.port("in")), timeout=5) as sock:
        start = time.monotonic()
        assert recv_all(sock) == b""
        assert time.monotonic() - start < 3
    record = plane.wait_record(lambda r: r.listener == "in")
    assert (record.close_reason, record.reason) == (CloseReason.HANDSHAKE_FAILED, HandshakeFailure.TIMEOUT)


def test_idle_timeout_closes_a_quiet_relay(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port, idle_timeout=0.4)
    plane.start()
    with socket.create_connection(("127.0.0.1", plane.port("out")), timeout=5) as sock:
        sock.sendall(b"hi")
        assert sock.recv(10) == b"hi"
        # Then nothing for 0.4 s: cut. A cut is a reset, never an EOF the app could take for the end (issue 11.3).
        with pytest.raises(ConnectionResetError):
            recv_all(sock)
    reasons = {plane.wait_record(lambda r, n=n: r.listener == n).close_reason for n in ("in", "out")}
    # whichever side times out first aborts; the other then sees the reset
    assert CloseReason.IDLE_TIMEOUT in reasons and reasons <= {CloseReason.IDLE_TIMEOUT, CloseReason.RESET}
    echo.close()


def test_max_lifetime_closes_a_busy_connection(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port, max_lifetime=0.5)
    plane.start()
    with socket.create_connection(("127.0.0.1", plane.port("out")), timeout=5) as sock:
        deadline = time.monotonic() + 5
        with_data = 0
        try:
            while time.monotonic() < deadline:
                sock.sendall(b"x")
                if not sock.recv(10):
                    break
                with_data += 1
        except OSError:
            pass
    assert with_data > 0 and time.monotonic() < deadline
    record = plane.wait_record(lambda r: r.listener == "out")
    assert record.close_reason is CloseReason.MAX_LIFETIME
    echo.close()


def test_connection_ends_when_the_peer_certificate_expires(plane: Plane, ca: pki.Ca) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    plane.contexts["client"] = plane.engine.ClientContext(
        material(ca, "/frontend", not_before=start, lifetime=dt.timedelta(seconds=31.5)))
    plane.start()
    with socket.create_connection(("127.0.0.1", plane.port("out")), timeout=8) as sock:
        sock.sendall(b"hi")
        assert sock.recv(10) == b"hi"
        with pytest.raises(ConnectionResetError):  # cut at expiry: a reset, not an EOF (issue 11.3)
            recv_all(sock)
    record = plane.wait_record(lambda r: r.listener == "in")
    assert record.close_reason is CloseReason.PEER_CERT_EXPIRED
    echo.close()


def test_beyond_max_connections_new_ones_are_refused_as_overloaded(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port, max_connections=2)
    plane.start()
    held = [socket.create_connection(("127.0.0.1", plane.port("out")), timeout=5) for _ in range(2)]
    for sock in held:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
    assert roundtrip(plane.port("out")) == b""
    assert plane.wait_record(lambda r: r.listener == "out").close_reason is CloseReason.OVERLOADED
    for sock in held:
        sock.close()
    # Once both held connections are recorded as ended their slots are free again; a refused
    # probe in between is only another OVERLOADED record, so retry within a bound.
    eventually(lambda: sum(1 for r in list(plane.records) if r.listener == "out") >= 3, 10,
               "records for the two released connections")
    eventually(lambda: roundtrip(plane.port("out")) == b"ping", 10, "a new connection served after release")
    echo.close()


def test_upstream_refusing_connections_is_recorded(plane: Plane) -> None:
    echo = EchoServer()
    dead = echo.port
    echo.close()
    plane.add_pair(dead)
    plane.start()
    assert roundtrip(plane.port("out")) == b""
    record = plane.wait_record(lambda r: r.listener == "in")
    assert record.close_reason is CloseReason.UPSTREAM_CONNECT_FAILED and record.decision is Verdict.ALLOW


def test_rotation_new_connections_use_new_contexts_established_keep_theirs(plane: Plane, ca: pki.Ca) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    plane.start()
    old = socket.create_connection(("127.0.0.1", plane.port("out")), timeout=5)
    old.sendall(b"1")
    assert old.recv(1) == b"1"
    plane.contexts["server"] = plane.engine.ServerContext(material(ca, "/backend", generation=2))
    plane.contexts["client"] = plane.engine.ClientContext(material(ca, "/frontend", generation=2))
    assert roundtrip(plane.port("out")) == b"ping"
    old.sendall(b"2")
    assert old.recv(1) == b"2"
    old.close()
    eventually(lambda: sum(1 for r in list(plane.records) if r.listener == "out") >= 2, 10,
               "records for both outbound connections")
    resumed = [r.resumed for r in list(plane.records) if r.listener == "out"]
    assert resumed and not any(resumed)  # a new context never resumes an old generation's session
    echo.close()


def test_an_authority_removed_by_rotation_stops_verifying_new_peers_only(plane: Plane, ca: pki.Ca) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    plane.start()
    old = socket.create_connection(("127.0.0.1", plane.port("out")), timeout=5)
    old.sendall(b"1")
    assert old.recv(1) == b"1"
    successor = pki.make_ca("example.org")  # the next bundle holds only the successor authority
    ours = material(ca, "/backend", generation=2)  # our own SVID still chains to the old one
    plane.contexts["server"] = plane.engine.ServerContext(
        dataclasses.replace(ours, bundles={"example.org": (successor.der,)}))
    assert roundtrip(plane.port("out")) == b""  # our frontend's SVID chains to the removed authority
    refused = plane.wait_record(lambda r: r.listener == "in" and r.close_reason is not CloseReason.COMPLETED)
    assert refused.close_reason is CloseReason.VERIFY_FAILED and refused.reason is VerifyFailure.UNTRUSTED_CHAIN
    old.sendall(b"2")  # the established connection keeps its context
    assert old.recv(1) == b"2"
    old.close()
    echo.close()
