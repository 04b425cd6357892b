"""Hold N idle keep-alive connections open through a pair.

Each connection completes one request first, so the whole path (both proxies'
TLS state and the backend connection) exists before memory is sampled; then it
sits idle. Opened in batches so the handshakes overlap inside the proxies.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_BATCH = 50


def _complete(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 64:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} bytes of the response")
        data += chunk


def _open_batch(host: str, port: int, n: int, timeout: float) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((host, port), timeout=timeout))
            socks[-1].sendall(_REQUEST)
        for s in socks:
            _complete(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


@contextmanager
def hold_idle(host: str, port: int, count: int, *, timeout: float) -> Iterator[list[socket.socket]]:
    """Open `count` connections (each after one full request), yield them,
    close them on exit. Raises TimeoutError past `timeout` seconds overall."""
    deadline = time.monotonic() + timeout
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"opened only {len(socks)} of {count} connections in {timeout:.0f}s")
            socks += _open_batch(host, port, min(_BATCH, count - len(socks)), timeout=10.0)
        yield socks
    finally:
        for s in socks:
            s.close()
