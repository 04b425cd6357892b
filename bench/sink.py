"""The bulk-throughput sink: a separate process so its reads never share a
GIL or a core schedule slot with the sender inside the harness.

Protocol per connection: the sender writes an 8-byte big-endian length N, then
N bytes; the sink discards them and, once all N have arrived, answers one byte
(b"k") and closes. The sender's clock therefore stops only when every byte has
crossed the whole pair, whatever buffering the proxies do, and no proxy needs
to forward a half-close.

Run: python -m bench.sink PORT
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

_CHUNK = 1 << 20


def _recv_exact(conn: socket.socket, n: int, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < n:
        r = conn.recv_into(view, min(len(buf), n - got))
        if r == 0:
            break
        got += r
    return got


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        header = bytearray(8)
        if _recv_exact(conn, 8, header) < 8:
            return
        (size,) = struct.unpack(">Q", header)
        if _recv_exact(conn, size, bytearray(_CHUNK)) == size:
            conn.sendall(b"k")


def serve(port: int) -> None:
    """Accept forever; a thread per connection so idle-connection tests that
    happen to land here cannot stall a bulk transfer."""
    with socket.create_server(("127.0.0.1", port), backlog=4096) as srv:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
