"""spiffe-sidecar pairs: the compiled engine on trio and on uvloop, and the
pure-Python (pyOpenSSL) engine on trio.

Both sidecars read the bench SVIDs from files (no agent in the loop, the same
files the C proxies get). The server sidecar authorizes exactly
spiffe://example.org/client; the client sidecar expects
spiffe://example.org/server. Access logs are off, as they are for the peers.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers.base import Endpoints, PairPorts, StartContext, pair_endpoints
from bench.pki import CLIENT_ID, SERVER_ID, SvidFiles
from bench.procs import wait_port

REPO = Path(__file__).resolve().parents[2]
_COMMON = ("log: {level: warning, access: 'off'}\n"
           "limits: {idle_timeout: 10m, max_connections: 100000, handshake_timeout: 20s}\n")


def _identity(svid: SvidFiles, ca: Path) -> str:
    return f"identity:\n  files: {{cert: {svid.cert}, key: {svid.key}, bundle: {ca}}}\n"


def client_config(ports: PairPorts, ctx: StartContext, runtime: str) -> str:
    """Outbound only: plain in on loopback, mTLS out expecting the server's ID."""
    lines = [_identity(ctx.pki.client, ctx.pki.ca), f"runtime: {runtime}\n", _COMMON, "outbound:\n"]
    for route, listen, up in (("http", ports.client_http, ports.server_http),
                              ("bulk", ports.client_bulk, ports.server_bulk)):
        lines.append(f"  - {{name: {route}, listen: 127.0.0.1:{listen}, connect_to: 127.0.0.1:{up}, "
                     f"expect: '{SERVER_ID}'}}\n")
    return "".join(lines)


def server_config(ports: PairPorts, ctx: StartContext, runtime: str, policy: Path) -> str:
    """Inbound only: mTLS in, the client's ID authorized, plain out."""
    lines = [_identity(ctx.pki.server, ctx.pki.ca), f"runtime: {runtime}\n", _COMMON,
             f"policy_file: {policy}\n", "inbound:\n"]
    for route, listen, up in (("http", ports.server_http, ctx.backends.http_port),
                              ("bulk", ports.server_bulk, ctx.backends.sink_port)):
        lines.append(f"  - {{name: {route}, listen: 127.0.0.1:{listen}, forward_to: 127.0.0.1:{up}, "
                     "policy: bench}\n")
    return "".join(lines)


def policy_text() -> str:
    return f"policies:\n  bench:\n    - name: allow-bench-client\n      allow: ['{CLIENT_ID}']\n"


@functools.cache
def _probe(compiled: bool) -> str | None:
    """Why this flavour cannot run here (the `run` command or engine absent)."""
    r = subprocess.run([sys.executable, "-m", "proxy", "run", "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    if r.returncode != 0 or "--config" not in r.stdout:
        return "spiffe-sidecar `run` is not runnable yet (python -m proxy run --help failed)"
    if compiled:
        r = subprocess.run([sys.executable, "-c", "import proxy._fastpath"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
        if r.returncode != 0:
            return "compiled engine not built: pip install -e . (needs Cython and libssl-dev)"
    return None


@dataclass
class Sidecar:
    """One spiffe-sidecar flavour: `runtime` trio|uvloop, `compiled` engine or pure Python."""

    name: str
    runtime: str
    compiled: bool
    env: dict[str, str] = field(default_factory=dict)

    def missing(self) -> str | None:
        return _probe(self.compiled)

    def start(self, ctx: StartContext) -> Endpoints:
        ports = PairPorts()
        policy = ctx.workdir / f"{self.name}-policy.yaml"
        policy.write_text(policy_text())
        env = {"PYTHONPATH": str(REPO), **self.env}
        env["SPIFFE_SIDECAR_NO_EXTENSIONS"] = "0" if self.compiled else "1"
        sids = []
        for side, text in (("server", server_config(ports, ctx, self.runtime, policy)),
                           ("client", client_config(ports, ctx, self.runtime))):
            cfg = ctx.workdir / f"{self.name}-{side}.yaml"
            cfg.write_text(text)
            proc = ctx.procs.start(f"{self.name}-{side}", [sys.executable, "-m", "proxy", "run", "-c", str(cfg)],
                                   env=env)
            wait_port(ports.server_http if side == "server" else ports.client_http, proc, timeout=30)
            sids.append(proc.pid)
        return pair_endpoints(ports, client_sid=sids[1], server_sid=sids[0])


def flavours() -> list[Sidecar]:
    """The three spiffe-sidecar variants a run compares."""
    return [Sidecar("sidecar-trio", "trio", compiled=True), Sidecar("sidecar-uvloop", "uvloop", compiled=True),
            Sidecar("sidecar-py", "trio", compiled=False)]
