"""A close the sidecar forces must look like one: a reset, never an orderly end of stream (issue 11.3).

A 100 MB transfer from the backend's app to a slow reader behind the
frontend is cut by the backend's drain timeout. Before the fix the backend
sent close_notify, the frontend forwarded it as a FIN, and the reader saw
a clean EOF after a fraction of the bytes: a protocol that reads to EOF
would have accepted the truncated stream. Real processes, both engines,
both runtimes, the relay thread and the event-loop relay.
"""

from __future__ import annotations

import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support import pki
from support.net import EchoServer, free_port
from support.sidecar import (BACKEND, FRONTEND, Identity, Peer, SidecarHarness, eventually, fastpath_available,
                             read_exactly, running)

TOTAL = 100 * 1024 * 1024
CHUNK = 256 * 1024


class BulkSender:
    """An app that writes TOTAL bytes to each connection, then ends it cleanly (FIN)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.errors: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        block = b"x" * CHUNK
        with conn:
            try:
                for _ in range(TOTAL // CHUNK):
                    conn.sendall(block)
                conn.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.errors.append(type(exc).__name__)

    def close(self) -> None:
        self.sock.close()


def _read_slowly(sock: Any, on_bytes: threading.Event, after: int) -> tuple[int, str]:
    """Read to the end at about 25 MB/s; (bytes, how it ended: 'eof' or the exception's name)."""
    got = 0
    while True:
        try:
            data = sock.recv(CHUNK)
        except (OSError, ssl.SSLError) as exc:
            return got, type(exc).__name__
        if not data:
            return got, "eof"
        got += len(data)
        if got >= after:
            on_bytes.set()
        time.sleep(0.01)


def _combos() -> list[Any]:
    fast = "fastpath" if fastpath_available() else "python"
    return [pytest.param(("trio", fast, "1"), id=f"trio-{fast}-relay-thread"),
            pytest.param(("trio", fast, "0"), id=f"trio-{fast}-event-loop-relay"),
            pytest.param(("uvloop", "python", "1"), id="uvloop-python"),
            pytest.param(("uvloop", fast, "0"), id=f"uvloop-{fast}-event-loop-relay")]


def _harness(d: Path, name: str, combo: tuple[str, str, str], **kw: Any) -> SidecarHarness:
    runtime, engine, thread = combo
    sc = SidecarHarness(d, runtime=runtime, engine=engine, name=name, drain_timeout="1s", **kw)
    sc.process.env["SPIFFE_SIDECAR_RELAY_THREAD"] = thread
    return sc


@pytest.mark.parametrize("combo", _combos())
def test_drain_timeout_cutting_a_100mb_transfer_reaches_the_far_app_as_a_reset_not_an_eof(
        combo: tuple[str, str, str], tmp_path: Path, ca: pki.Ca) -> None:
    app, b_port, f_port = BulkSender(), free_port(), free_port()
    backend = _harness(tmp_path, "backend", combo, identity=Identity.mint(tmp_path, ca, "/backend"),
                       inbound=[{"name": "api", "listen": f"127.0.0.1:{b_port}",
                                 "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                       policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    frontend = _harness(tmp_path, "frontend", combo, identity=Identity.mint(tmp_path, ca, "/frontend"),
                        outbound=[{"name": "to-api", "listen": f"127.0.0.1:{f_port}",
                                   "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND}])
    try:
        with running(backend, frontend):
            with socket.create_connection(("127.0.0.1", f_port), timeout=20) as reader:
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
                started = threading.Event()
                result: list[tuple[int, str]] = []
                worker = threading.Thread(target=lambda: result.append(_read_slowly(reader, started, 4 << 20)))
                worker.start()
                assert started.wait(15), "the transfer did not start"
                backend.signal(signal.SIGTERM)  # drain: 1 s, then the stream is cut
                worker.join(30)
            backend.wait_exit(10)
            frontend.wait_record(lambda r: r["listener"] == "to-api", 10)
    finally:
        app.close()
    assert result, "the reader did not finish"
    got, ending = result[0]
    assert got < TOTAL, "the drain did not cut the transfer (make the reader slower)"
    assert ending == "ConnectionResetError", (
        f"the far app saw {ending!r} after {got} of {TOTAL} bytes: a cut stream must not end like a complete one")
    back = [r for r in backend.records() if r["listener"] == "api"]
    assert [r["close_reason"] for r in back] == ["drained"], back
    front = [r for r in frontend.records() if r["listener"] == "to-api"]
    assert [r["close_reason"] for r in front] == ["reset"], front


@pytest.mark.parametrize("combo", _combos()[:3])
def test_drain_timeout_sends_a_quiet_tls_peer_no_close_notify(combo: tuple[str, str, str], tmp_path: Path,
                                                              ca: pki.Ca) -> None:
    # A quiet stream (an idle database session, say): nothing in flight, so close_notify
    # would get through and the peer would read a clean end. A bulk transfer cannot show
    # it: there the old close_notify attempt found the send buffer full.
    app, port = EchoServer(), free_port()
    backend = _harness(tmp_path, "backend", combo, identity=Identity.mint(tmp_path, ca, "/backend"),
                       inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                 "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                       policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    try:
        with backend:
            raw = socket.create_connection(("127.0.0.1", port), timeout=20)
            # Not suppressing ragged EOFs: a close without close_notify is an error here, as it should be.
            with Peer(tmp_path, ca, FRONTEND).context.wrap_socket(raw, suppress_ragged_eofs=False) as tls:
                tls.sendall(b"hello")
                assert read_exactly(tls, 5) == b"hello"
                backend.signal(signal.SIGTERM)
                try:
                    ending = "eof" if tls.recv(1) == b"" else "data"
                except (OSError, ssl.SSLError) as exc:
                    ending = type(exc).__name__
            backend.wait_exit(10)
    finally:
        app.close()
    # close_notify reads as b"" (eof): the peer would take the cut for the end of the stream.
    assert ending in ("ConnectionResetError", "SSLEOFError"), f"the TLS peer saw {ending!r}"
    eventually(lambda: any(r["close_reason"] == "drained" for r in backend.records()), 5, "the drained record")
