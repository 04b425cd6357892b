"""Full mutual-TLS handshakes per second straight against a server proxy,
with `openssl s_time -new` presenting the client SVID.

s_time works with TLS 1.3 client certificates, but a client whose certificate
the server refuses still "completes" its side of a TLS 1.3 handshake and is
counted; so every connection also fetches `/` (`-www /`) through the server
proxy to the backend, and a run whose connections read no bytes is an error.
One s_time is a strictly sequential client (its own CPU and the server's never
overlap), so `parallel` copies run at once to keep the server busy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from bench.pki import BenchPki

_COUNT = re.compile(r"(\d+) connections in [\d.]+ real seconds, (\d+) bytes read per connection")


@dataclass(frozen=True, slots=True)
class STimeResult:
    """Completed handshakes (each with one request) and their rate."""

    handshakes: int
    per_s: float


def missing() -> str | None:
    """Why s_time cannot run here, or None."""
    return None if shutil.which("openssl") else "openssl not installed: apt-get install openssl"


def run_stime(host: str, port: int, pki: BenchPki, *, seconds: float, parallel: int = 2) -> STimeResult:
    """Run `parallel` s_time clients for `seconds` each; sum their counts."""
    argv = ["openssl", "s_time", "-connect", f"{host}:{port}", "-new", "-cert", str(pki.client.cert),
            "-key", str(pki.client.key), "-CAfile", str(pki.ca), "-time", str(max(1, round(seconds))),
            "-www", "/"]
    start = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(parallel)]
    total = 0
    try:
        for p in procs:
            out, err = p.communicate(timeout=seconds + 30)
            m = _COUNT.search(out)
            if m is None or int(m.group(2)) == 0:
                raise RuntimeError(f"s_time completed no request: {(out + err).strip()[-300:]}")
            total += int(m.group(1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return STimeResult(handshakes=total, per_s=total / (time.monotonic() - start))
