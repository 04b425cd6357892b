"""A sidecar's bad days, with real processes: SIGTERM under load, a second signal, the agent going away.

Each test starts its own sidecar(s), since each ends or disturbs them.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import pki
from support.agent import AgentProcess, agent_yaml
from support.net import EchoServer, free_port
from support.sidecar import FRONTEND, Identity, Peer, SidecarHarness, fastpath_available
from support.sidecar import eventually as _eventually, read_exactly as _read_exactly

APP = "spiffe://example.org/app"


def _runtimes() -> list[Any]:
    engine = "fastpath" if fastpath_available() else "python"
    return [pytest.param(("trio", engine), id=f"trio-{engine}"), pytest.param(("uvloop", "python"), id="uvloop-python")]


def _backend(d: Path, ca: pki.Ca, runtime: str, engine: str, drain: str) -> tuple[SidecarHarness, int, EchoServer]:
    app, port = EchoServer(), free_port()
    sc = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"), admin=True,
                        drain_timeout=drain,
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                  "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                        policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    return sc, port, app


def _refused(peer: Peer, port: int) -> bool:
    try:
        with peer.connect(port, timeout=2.0) as tls:
            tls.sendall(b"x")
            return tls.recv(1) == b""
    except OSError:
        return True


@pytest.mark.parametrize("combo", _runtimes())
def test_sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    sc, port, app = _backend(tmp_path, ca, *combo, drain="2s")
    peer = Peer(tmp_path, ca, FRONTEND)
    with sc:
        in_flight = [peer.connect(port) for _ in range(6)]
        for n, tls in enumerate(in_flight):
            tls.sendall(f"request {n} first half;".encode())
        lingering = peer.connect(port)  # never finishes: closed by the sidecar at the drain timeout
        lingering.sendall(b"hello")
        assert _read_exactly(lingering, 5) == b"hello"
        _eventually(lambda: sc.metric("spiffe_sidecar_connections_active", listener="api") == 7, 5, "7 open")
        started = time.monotonic()
        sc.signal(signal.SIGTERM)
        _eventually(lambda: sc.get("/ready")[0] == 503, 2, "/ready says not ready while draining")
        assert "draining" in str(sc.get_json("/ready")["reasons"])
        assert _refused(peer, port), "a new connection was accepted during the drain"
        for n, tls in enumerate(in_flight):
            tls.sendall(f"second half {n}".encode())
            want = f"request {n} first half;second half {n}".encode()
            assert _read_exactly(tls, len(want)) == want, f"in-flight request {n} did not complete"
            tls.unwrap().close()  # close_notify: a clean end of the request
        code = sc.wait_exit(6)
        took = time.monotonic() - started
        lingering.close()
    app.close()
    assert code == 0, sc.log()[-2000:]
    assert took < 2 + 2.5, f"exit took {took:.1f}s with a 2s drain timeout"
    reasons = [r["close_reason"] for r in sc.records() if r["listener"] == "api"]
    assert reasons.count("completed") >= 6 and reasons.count("drained") == 1, reasons


@pytest.mark.parametrize("combo", _runtimes())
def test_a_second_sigterm_exits_at_once(combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    sc, port, app = _backend(tmp_path, ca, *combo, drain="30s")
    with sc:
        held = Peer(tmp_path, ca, FRONTEND).connect(port)
        held.sendall(b"x")
        assert _read_exactly(held, 1) == b"x"
        sc.signal(signal.SIGTERM)
        _eventually(lambda: "draining" in sc.log(), 3, "drain began")
        started = time.monotonic()
        sc.signal(signal.SIGTERM)
        sc.wait_exit(3)
        assert time.monotonic() - started < 3
        held.close()
    app.close()
    assert "second SIGTERM" in sc.log()
    assert any(r["close_reason"] == "drained" for r in sc.records())


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A short directory for Unix socket paths (sun_path is 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ops-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_agent_killed_mid_traffic_fails_no_connection_and_its_restart_restores_the_stream(short_dir: Path) -> None:
    d = short_dir
    engine = "fastpath" if fastpath_available() else "python"
    cfg = agent_yaml(d, entries=[(APP, [f"unix:uid:{os.getuid()}"])], x509_svid_ttl="2m",
                     trust_domains=[{"name": "example.org", "ca_dir": str(d / "ca")}])
    sock = d / "agent.sock"
    app, b_port, f_port = EchoServer(), free_port(), free_port()
    identity = {"workload_api": f"unix://{sock}"}
    agent = AgentProcess(cfg, sock).__enter__()
    backend = SidecarHarness(d, runtime="trio", engine=engine, identity=identity, admin=True, name="backend",
                             inbound=[{"name": "api", "listen": f"127.0.0.1:{b_port}",
                                       "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                             policy={"api": [{"name": "app", "allow": [APP]}]})
    frontend = SidecarHarness(d, runtime="uvloop", engine="python", identity=identity, admin=True, name="frontend",
                              outbound=[{"name": "to-api", "listen": f"127.0.0.1:{f_port}",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": APP}])
    failures: list[str] = []
    done = [0]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", f_port), timeout=5) as s:
                    s.sendall(b"ping")
                    got = b""
                    while len(got) < 4 and (chunk := s.recv(4)):
                        got += chunk
                    if got != b"ping":
                        failures.append(f"got {got!r}")
                    done[0] += 1
            except OSError as exc:
                failures.append(str(exc))
            time.sleep(0.02)

    try:
        with backend, frontend:
            worker = threading.Thread(target=traffic, daemon=True)
            worker.start()
            _eventually(lambda: done[0] >= 5, 10, "traffic flowing")
            generation = backend.get_json("/identity")["generation"]
            agent.proc.kill()  # type: ignore[union-attr]
            agent.proc.wait(5)  # type: ignore[union-attr]
            for sc in (backend, frontend):
                _eventually(lambda: sc.get_json("/identity")["source"]["state"] == "reconnecting", 5,
                            f"{sc.name} reports the lost stream")
                _eventually(lambda: sc.metric("spiffe_sidecar_workload_api_reconnects_total") >= 1, 5,
                            f"{sc.name} counts reconnects")
                assert sc.get("/ready")[0] == 200, "a valid SVID keeps the sidecar ready"
            served = done[0]
            time.sleep(1.0)
            assert done[0] > served, "traffic stopped while the agent was away"
            agent.__exit__(None, None, None)
            agent = AgentProcess(cfg, sock).__enter__()
            for sc in (backend, frontend):
                _eventually(lambda: sc.get_json("/identity")["source"]["state"] == "connected", 15,
                            f"{sc.name} reconnected")
            assert backend.get_json("/identity")["generation"] > generation
            for sc in (backend, frontend):  # said once each way, as a WARNING: not silent until expiry
                log = sc.log()
                assert log.count("stream lost") == 1 and log.count("reconnected after") == 1, log[-3000:]
                assert "WARNING" in next(line for line in log.splitlines() if "stream lost" in line)
            time.sleep(0.5)
            stop.set()
            worker.join(10)
    finally:
        stop.set()
        agent.__exit__(None, None, None)
        app.close()
    assert not failures, failures[:5]


def test_an_expired_svid_fails_closed_and_says_why(tmp_path: Path, ca: pki.Ca) -> None:
    app, port = EchoServer(), free_port()
    # Valid from a minute ago for a minute and 6 s: about 5 s of service after start-up.
    ident = Identity.mint(tmp_path, ca, "/backend", lifetime=dt.timedelta(minutes=1, seconds=6))
    sc = SidecarHarness(tmp_path, runtime="trio", engine="python", identity=ident, admin=True,
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                  "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                        policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    peer = Peer(tmp_path, ca, FRONTEND)
    try:
        with sc:
            assert peer.echo(port) and sc.get("/ready")[0] == 200
            _eventually(lambda: sc.get("/ready")[0] == 503, 10, "not ready once the SVID expired")
            reasons = " ".join(sc.get_json("/ready")["reasons"])
            assert "expired" in reasons and "no renewal" in reasons, reasons
            assert sc.get_json("/identity")["ready"] is False
            assert sc.metric("spiffe_sidecar_identity_ready") == 0
            assert not peer.echo(port), "a connection was served with an expired SVID"
            _eventually(lambda: "refusing new connections (fail closed)" in sc.log(), 3, "the log says why")
    finally:
        app.close()


def test_not_ready_before_the_first_svid_and_the_reason_names_the_source(short_dir: Path) -> None:
    sock = short_dir / "nobody.sock"
    sc = SidecarHarness(short_dir, runtime="uvloop", engine="python", identity={"workload_api": f"unix://{sock}"},
                        admin=True, outbound=[{"name": "out", "listen": f"127.0.0.1:{free_port()}",
                                               "connect_to": "127.0.0.1:1", "expect": APP}])
    sc.process.start()
    try:
        _eventually(lambda: _answers(sc), 10, "the admin endpoint answers while waiting for an SVID")
        status, body = sc.get("/ready")
        assert status == 503 and b"no X.509-SVID yet" in body and str(sock).encode() in body, body
        assert sc.get_json("/identity")["source"]["state"] in ("starting", "reconnecting")
    finally:
        sc.stop()


def _answers(sc: SidecarHarness) -> bool:
    try:
        sc.get("/live", timeout=1.0)
        return True
    except OSError:
        return False
