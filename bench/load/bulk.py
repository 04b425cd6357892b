"""Push N bytes through a pair into the sink and time it (see bench/sink.py
for the length-prefix/ack protocol that makes the clock end-to-end)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

_CHUNK = memoryview(bytes(range(256)) * 4096)  # 1 MiB, not all zeros


@dataclass(frozen=True, slots=True)
class BulkResult:
    """Bytes delivered and MB/s (10**6 bytes per second)."""

    nbytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


def run_bulk(host: str, port: int, nbytes: int, *, timeout: float) -> BulkResult:
    """Send `nbytes` to host:port and wait for the sink's ack; raise
    TimeoutError if the whole transfer takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.sendall(struct.pack(">Q", nbytes))
        left = nbytes
        while left > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bulk transfer exceeded {timeout:.0f}s with {left} bytes unsent")
            n = min(left, len(_CHUNK))
            sock.sendall(_CHUNK[:n])
            left -= n
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        if sock.recv(1) != b"k":
            raise RuntimeError("sink closed without acknowledging the transfer")
    return BulkResult(nbytes=nbytes, seconds=time.monotonic() - start)
