"""1 GiB through a sidecar pair arrives byte-identical, with half-close both ways (slow).

The client streams SIZE bytes and closes its write side; the app hashes
what arrives and, on EOF, answers with the sha256 and closes its side: the
answer can only arrive if both half-closes crossed both sidecars.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time


import pytest

from support import pki
from support.net import free_port, recv_all
from support.sidecar import Identity, SidecarHarness, fastpath_available, running

SIZE = int(os.environ.get("SPIFFE_SIDECAR_BULK_BYTES", 1 << 30))
FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"


class HashingSink:
    """Reads to EOF, hashing; then sends the hex digest and closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            digest = hashlib.sha256()
            buf = bytearray(1 << 20)
            while n := conn.recv_into(buf):
                digest.update(memoryview(buf)[:n])
            conn.sendall(digest.hexdigest().encode())

    def close(self) -> None:
        self.sock.close()


def _combos() -> list[tuple[str, str]]:
    # The full GiB runs on the default engine on both runtimes; python engine gets it too when
    # the extension is absent, so the test never silently disappears.
    engine = "fastpath" if fastpath_available() else "python"
    return [("trio", engine), ("uvloop", engine)]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("runtime,engine", _combos())
def test_one_gib_arrives_byte_identical_with_half_close_both_ways(runtime: str, engine: str, tmp_path: "os.PathLike[str]",
                                                                 ca: pki.Ca) -> None:
    d = tmp_path  # type: ignore[assignment]
    sink = HashingSink()
    b_port, a_port = free_port(), free_port()
    backend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"),
                             name="backend", policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]},
                             inbound=[{"name": "bulk-in", "listen": f"127.0.0.1:{b_port}",
                                       "forward_to": f"127.0.0.1:{sink.port}", "policy": "api"}])
    frontend = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/frontend"),
                              name="frontend", outbound=[{"name": "bulk-out", "listen": f"127.0.0.1:{a_port}",
                                                          "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND}])
    block = os.urandom(1 << 20)
    expected = hashlib.sha256()
    with running(backend, frontend):
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", a_port), timeout=60) as sock:
            sent = 0
            while sent < SIZE:
                piece = block[: min(len(block), SIZE - sent)]
                sock.sendall(piece)
                expected.update(piece)
                sent += len(piece)
            sock.shutdown(socket.SHUT_WR)
            answer = recv_all(sock).decode()
        elapsed = time.monotonic() - start
        rec = backend.wait_record(lambda r: r["listener"] == "bulk-in")
    sink.close()
    print(f"\n{SIZE >> 20} MiB through the pair on {runtime}/{engine}: {elapsed:.1f}s "
          f"({SIZE / elapsed / (1 << 20):.0f} MiB/s)")
    assert answer == expected.hexdigest()
    assert rec["bytes_in"] == SIZE and rec["close_reason"] == "completed"
