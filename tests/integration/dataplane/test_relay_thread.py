"""The compiled engine's relay thread (proxy/_fastpath_hub.pxi, proxy/runtime/offload.py).

The behaviour every relay must have (bytes, half-close, deadlines, limits)
is tested on every plane variant in the other modules of this package;
these tests pin down what is particular to the thread: connections really
leave the event loop, a stop takes them back with their byte counts, a TLS
error found by the thread reaches the record, and the hand-over rules hold
when the loop has not even seen a connection yet.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path

import pytest

from proxy.connection.machine import Direction
from proxy.errors import CloseReason
from support import pki
from support.net import EchoServer
from support.combos import RUNTIMES, fastpath, requires_fastpath
from support.sidecar import FRONTEND, Peer, Plane, eventually, material

#: The relay thread is the compiled engine's: without the extension there is nothing to test here.
pytestmark = requires_fastpath


def _compiled_plane(runtime: str, ca: pki.Ca) -> Plane:
    _fastpath = fastpath()
    p = Plane(engine=_fastpath, runtime=runtime)
    p.contexts["server"] = _fastpath.ServerContext(material(ca, "/backend"))
    p.contexts["client"] = _fastpath.ClientContext(material(ca, "/frontend"))
    return p


@pytest.fixture(params=RUNTIMES)
def compiled(request: pytest.FixtureRequest, ca: pki.Ca) -> Plane:
    p = _compiled_plane(request.param, ca)
    yield p  # type: ignore[misc]
    p.stop()


def _hub(plane: Plane) -> object:
    # Plane.start() returns as the runtime starts; the data plane sets its relay thread up just after.
    eventually(lambda: plane.data_plane is not None and plane.data_plane.relay_thread is not None, 5,
               "a relay thread running")
    return plane.data_plane.relay_thread.hub  # type: ignore[union-attr]


def test_established_connections_leave_the_event_loop(compiled: Plane) -> None:
    echo = EchoServer()
    compiled.add_pair(echo.port)
    compiled.start()
    hub = _hub(compiled)
    with socket.create_connection(("127.0.0.1", compiled.port("out")), timeout=10) as sock:
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"
        # Both sidecars' halves of this one connection (outbound and inbound) are in the hub.
        eventually(lambda: hub.active == 2, 5, "both relays handed to the thread")  # type: ignore[attr-defined]
    eventually(lambda: hub.active == 0, 5, "both relays handed back")  # type: ignore[attr-defined]
    records = [compiled.wait_record(lambda r, n=n: r.listener == n) for n in ("out", "in")]
    assert all(r.close_reason is CloseReason.COMPLETED for r in records), records
    assert all((r.bytes_in, r.bytes_out) == (4, 4) for r in records), records
    echo.close()


def test_the_python_engine_and_the_loop_variant_have_no_relay_thread(ca: pki.Ca) -> None:
    from proxy.tls import engine_py

    for p in (Plane(engine=engine_py, runtime="trio"),
              Plane(engine=_compiled_plane("trio", ca).engine, runtime="trio", relay_on_thread=False)):
        p.add("in", Direction.INBOUND, 1)
        p.start()
        try:
            p.port("in")
            with socket.create_connection(("127.0.0.1", p.port("in")), timeout=5):
                pass  # the plane is serving once a connection was accepted and recorded
            p.wait_record(lambda r: r.listener == "in")
            assert p.data_plane is not None and p.data_plane.relay_thread is None
        finally:
            p.stop()


def test_a_stop_takes_relays_back_and_records_their_bytes(compiled: Plane) -> None:
    echo = EchoServer()
    compiled.add_pair(echo.port)
    compiled.start()
    hub = _hub(compiled)
    sock = socket.create_connection(("127.0.0.1", compiled.port("out")), timeout=10)
    try:
        sock.sendall(b"hello")
        assert sock.recv(16) == b"hello"
        eventually(lambda: hub.active == 2, 5, "relays on the thread")  # type: ignore[attr-defined]
        compiled.stop()  # grace 0.5 s, the connection stays open: cancelled, taken back from the hub
    finally:
        sock.close()
    for name in ("out", "in"):
        record = compiled.wait_record(lambda r, n=name: r.listener == n)
        assert record.close_reason is CloseReason.DRAINED, record
        assert (record.bytes_in, record.bytes_out) == (5, 5), record
    echo.close()


def test_a_tls_error_found_by_the_thread_is_a_reset_naming_openssls_reason(compiled: Plane, ca: pki.Ca,
                                                                           tmp_path: Path) -> None:
    echo = EchoServer()
    compiled.add("in", Direction.INBOUND, echo.port)
    compiled.start()
    peer = Peer(tmp_path, ca, FRONTEND)
    with peer.connect(compiled.port("in"), timeout=10) as tls:
        tls.sendall(b"ok")
        assert tls.recv(16) == b"ok"
        # An application-data record whose MAC cannot verify, written under the TLS layer.
        os.write(tls.fileno(), b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        try:
            while tls.recv(1024):
                pass
        except (ssl.SSLError, OSError):
            pass
    record = compiled.wait_record(lambda r: r.listener == "in")
    assert record.close_reason is CloseReason.RESET, record
    assert record.detail.startswith("TLS ") and "mac" in record.detail.lower(), record.detail
    echo.close()


def test_a_relay_cancelled_before_the_loop_saw_it_is_never_started(ca: pki.Ca) -> None:
    from proxy import _fastpath  # type: ignore[attr-defined]

    server = _fastpath.ServerContext(material(ca, "/backend"))
    a, b = socket.socketpair()
    plain_a, plain_b = socket.socketpair()
    hub = _fastpath.RelayHub(4096)
    conn = server.new_connection(a.fileno())
    handle = hub.add(conn, a.fileno(), plain_a.fileno(), 0.0, 0.0, 0)
    assert handle.outcome == _fastpath.RELAY_RUNNING and hub.active == 1
    hub.cancel(handle)  # the loop thread is not even running: the slot is still in "incoming"
    assert handle.outcome == _fastpath.RELAY_CANCELLED and hub.active == 0
    thread = threading.Thread(target=hub.run)
    thread.start()
    try:
        b.sendall(b"\x16\x03\x01\x00\x05hello")  # had the loop pumped this connection, it would answer
        plain_b.settimeout(0.3)
        with pytest.raises(TimeoutError):
            plain_b.recv(16)
        b.settimeout(0.3)
        with pytest.raises(TimeoutError):
            b.recv(16)
        assert hub.finished() == []
    finally:
        hub.stop()
        thread.join(5)
        for s in (a, b, plain_a, plain_b):
            s.close()
    assert not thread.is_alive()
