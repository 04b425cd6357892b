"""The fixed ends of every path: a 64-byte HTTP/1.1 backend and a byte sink.

The HTTP backend is nginx with one worker returning a constant 64-byte body,
so the backend is as cheap as it gets and the same for every variant.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.nginx_conf import main_block, start_nginx
from bench.peers.base import Backends
from bench.procs import ProcessSet, free_port, wait_port

BODY = "0123456789abcdef" * 3 + "0123456789abcde\n"  # 64 bytes
REPO = Path(__file__).resolve().parent.parent


def http_config(port: int, prefix: Path) -> str:
    """nginx.conf for the backend: keep-alive effectively unbounded, no logs."""
    assert len(BODY) == 64
    return main_block(prefix, stream=False) + (
        "http {\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 600s;\n"
        f"  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n"
        f"    location / {{ default_type text/plain; return 200 \"{BODY[:-1]}\\n\"; }}\n  }}\n}}\n")


def start_backends(procs: ProcessSet, workdir: Path, sink_port: int | None = None) -> Backends:
    """Start the HTTP backend and the sink (on `sink_port` when a user's own
    pair forwards there); raise if nginx is absent (the backend is needed by
    every variant, direct included)."""
    if shutil.which("nginx") is None:
        raise SystemExit("nginx not installed (needed as the 64-byte backend): apt-get install nginx")
    backends = Backends(http_port=free_port(), sink_port=sink_port or free_port())
    web = start_nginx(procs, "backend", http_config(backends.http_port, workdir / "backend"), workdir)
    sink = procs.start("sink", [sys.executable, "-m", "bench.sink", str(backends.sink_port)],
                       env={"PYTHONPATH": str(REPO)})
    wait_port(backends.http_port, web)
    wait_port(backends.sink_port, sink)
    return backends
