"""The demo's two small apps: an HTTP/1.1 "backend" and the client the "frontend" runs.

Plain blocking sockets in threads: the apps stand for any workload and know
nothing of SPIFFE; only the sidecars in front of them do.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass


class HelloBackend:
    """A tiny HTTP/1.1 server on 127.0.0.1: answers every request with a hello and the path.

    ``close()`` stops it (the thread exits when the listening socket closes).
    """

    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.served = 0
        self._thread = threading.Thread(target=self._serve, name=f"{name}-app", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                path = request.split(b" ", 2)[1].decode("ascii", "replace")
                body = f"hello from {self.name}: you asked for {path}\n".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                self.served += 1
            except OSError:
                return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@dataclass(frozen=True, slots=True)
class Response:
    """What the client got: status (0 when there was no HTTP answer), body, or the error."""

    status: int
    body: str
    error: str = ""


def http_get(port: int, path: str = "/", *, timeout: float = 5.0) -> Response:
    """One GET through a local port (an outbound sidecar listener), one connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as exc:
        return Response(0, "", f"{type(exc).__name__}: {exc}")
    if not data:
        return Response(0, "", "connection closed without a response")
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Response(0, "", f"not an HTTP response: {data[:40]!r}")
    return Response(status, body.decode("utf-8", "replace"))
