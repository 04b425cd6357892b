"""Restarting the agent under load: its CA persists by default, so no request fails.

A real agent process (agent.yaml without any CA setting: the default state
directory, pointed by ``SPIFFE_SIDECAR_AGENT_STATE_DIR`` into the test's own
directory), two sidecar processes (frontend outbound -> backend inbound ->
echo app) and a client opening a new connection per request, so every
request is a fresh handshake verified against the bundle each sidecar holds
at that moment. The agent is restarted three times (twice SIGTERM, once
SIGKILL); every sidecar reconnects in its own time.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.agent import AgentProcess, agent_yaml
from support.net import EchoServer, free_port
from support.sidecar import SidecarHarness, eventually, fastpath_available

APP = "spiffe://example.org/app"


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A short directory for Unix socket paths (sun_path is 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="rst-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Traffic:
    """One request per new connection through the pair, in a thread, bounded by ``stop`` and a count."""

    def __init__(self, port: int, limit: int = 20000) -> None:
        self.port, self.limit = port, limit
        self.done, self.failures = 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set() and self.done < self.limit:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"ping")
                    got = b""
                    while len(got) < 4 and (chunk := s.recv(4 - len(got))):
                        got += chunk
                    if got != b"ping":
                        self.failures.append(f"{time.monotonic():.2f} got {got!r}")
            except OSError as exc:
                self.failures.append(f"{time.monotonic():.2f} {exc}")
            self.done += 1
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_agent_restarts_keep_the_ca_and_fail_no_request(short_dir: Path) -> None:
    d = short_dir
    cfg = agent_yaml(d, entries=[(APP, [f"unix:uid:{os.getuid()}"])], x509_svid_ttl="2m")
    text = cfg.read_text()
    import json

    doc = json.loads(text)
    doc.pop("state_dir", None)  # no CA setting at all: the default state directory must keep it
    cfg.write_text(json.dumps(doc))
    env = {"SPIFFE_SIDECAR_AGENT_STATE_DIR": str(d / "state")}
    sock = d / "agent.sock"
    engine = "fastpath" if fastpath_available() else "python"
    app, b_port, f_port = EchoServer(), free_port(), free_port()
    identity = {"workload_api": f"unix://{sock}"}
    agent = AgentProcess(cfg, sock, env=env).__enter__()
    backend = SidecarHarness(d, runtime="trio", engine=engine, identity=identity, admin=True, name="backend",
                             inbound=[{"name": "api", "listen": f"127.0.0.1:{b_port}",
                                       "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                             policy={"api": [{"name": "app", "allow": [APP]}]})
    frontend = SidecarHarness(d, runtime="uvloop", engine="python", identity=identity, admin=True, name="frontend",
                              outbound=[{"name": "to-api", "listen": f"127.0.0.1:{f_port}",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": APP}])
    traffic: Traffic | None = None
    try:
        with backend, frontend:
            roots = backend.get_json("/identity")["trust_domains"]
            assert "EPHEMERAL" not in agent.log() and "CA kept in" in agent.log()
            traffic = Traffic(f_port)
            eventually(lambda: traffic.done >= 10, 10, "traffic flowing")
            for kill in (False, True, False):
                generations = [sc.get_json("/identity")["generation"] for sc in (backend, frontend)]
                if kill:
                    agent.proc.kill()  # type: ignore[union-attr]
                    agent.proc.wait(5)  # type: ignore[union-attr]
                agent.__exit__(None, None, None)
                agent = AgentProcess(cfg, sock, env=env).__enter__()
                for sc, before in zip((backend, frontend), generations):
                    eventually(lambda: sc.get_json("/identity")["generation"] > before, 20,
                               f"{sc.name} got an SVID from the restarted agent")
                served = traffic.done
                eventually(lambda: traffic.done >= served + 20, 10, "traffic after the restart")
            traffic.close()
            for sc in (backend, frontend):
                assert sc.get_json("/identity")["trust_domains"] == roots, f"{sc.name}: the CA changed"
    finally:
        if traffic is not None:
            traffic.close()
        agent.__exit__(None, None, None)
        app.close()
    assert traffic.done >= 60
    assert not traffic.failures, f"{len(traffic.failures)} of {traffic.done} requests failed: {traffic.failures[:5]}"


def test_an_ephemeral_ca_is_announced_loudly(short_dir: Path) -> None:
    cfg = agent_yaml(short_dir, entries=[(APP, ["unix:uid:0"])],
                     trust_domains=[{"name": "example.org", "ephemeral_ca": True}])
    with AgentProcess(cfg, short_dir / "agent.sock") as agent:
        eventually(lambda: "EPHEMERAL" in agent.log(), 5, "the warning")
    line = next(line for line in agent.log().splitlines() if "EPHEMERAL" in line)
    assert "WARNING" in line and "example.org" in line and "state_dir" in line
    assert not (short_dir / "agent.state").exists(), "an ephemeral CA was written to disk"
