"""A real HTTP/1.1 app for the HTTP-layer tests: records every request it receives, with its headers.

``ThreadingHTTPServer`` from the standard library (a real server, not a
mock): it answers ``200`` with a body naming the method and path, keeps
connections alive, and keeps the list of requests it saw (method, path,
headers, body, which connection) so a test can prove what reached the app.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    all_headers: list[tuple[str, str]]
    body: bytes
    connection: int


class RecordingApp:
    """The app behind an inbound HTTP listener."""

    def __init__(self, port: int = 0) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with app.lock:
                    app.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                         list(self.headers.items()), body, id(self.connection)))
                reply = f"{self.command} {self.path} ok\n".encode() + body
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @classmethod
    def on_port(cls, port: int) -> RecordingApp:
        """The app on a given port (a test that starts it after the sidecar)."""
        return cls(port)

    def paths(self) -> list[str]:
        with self.lock:
            return [s.path for s in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
