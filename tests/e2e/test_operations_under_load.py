"""The operations side of a real sidecar under hostile load: out of fds, idle admin clients, resets.

Each test starts a backend sidecar process (files identity, inbound "api",
admin endpoint on) and attacks it with plain sockets on loopback; what is
measured is the process's own log, threads (/proc/PID/task) and CPU time
(/proc/PID/stat).
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from support import pki
from support.net import EchoServer, free_port
from support.sidecar import FRONTEND, Identity, Peer, SidecarHarness, eventually, fastpath_available


def _runtimes() -> list[Any]:
    engine = "fastpath" if fastpath_available() else "python"
    return [pytest.param(("trio", engine), id=f"trio-{engine}"), pytest.param(("uvloop", "python"), id="uvloop-python")]


def _backend(d: Path, ca: pki.Ca, runtime: str = "trio", engine: str = "python") -> tuple[SidecarHarness, int, EchoServer]:
    app, port = EchoServer(), free_port()
    sc = SidecarHarness(d, runtime=runtime, engine=engine, identity=Identity.mint(d, ca, "/backend"), admin=True,
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                  "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                        policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]},
                        limits={"handshake_timeout": "30s"})
    return sc, port, app


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settled_fds(pid: int) -> int:
    """The process's open fd count once it stopped changing (bounded wait)."""
    count = len(os.listdir(f"/proc/{pid}/fd"))
    for _ in range(50):
        time.sleep(0.1)
        now = len(os.listdir(f"/proc/{pid}/fd"))
        if now == count:
            return count
        count = now
    return count


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _targets() -> list[Any]:
    """(runtime, engine, who exhausts the fds): each listener on each runtime, the admin endpoint once."""
    return [pytest.param((*p.values[0], "listener"), id=f"{p.id}-listener") for p in _runtimes()] + [
        pytest.param(("trio", "python", "admin"), id="admin")]


@pytest.mark.parametrize("target", _targets())
def test_out_of_fds_is_said_once_per_listener_and_nothing_spins(
        target: tuple[str, str, str], tmp_path: Path, ca: pki.Ca) -> None:
    runtime, engine, who = target
    sc, port, app = _backend(tmp_path, ca, runtime, engine)
    held: list[socket.socket] = []
    # Connections the target accepts and holds (a handshake that never starts; an idle admin client)
    # until accept() fails; nothing else accepts meanwhile, so no freed fd goes elsewhere.
    attack = port if who == "listener" else sc.admin_port
    with sc:
        assert sc.get("/live")[0] == 200
        used = _settled_fds(sc.pid)  # the probe's own connection closed: no fd is freed behind the limit
        soft, hard = resource.prlimit(sc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(sc.pid, resource.RLIMIT_NOFILE, (used + 6, hard))  # the soft limit: it can go back
        try:
            for _ in range(20):  # the first few are accepted and held, then accept() fails
                held.append(_connect(attack))
            time.sleep(0.5)
            cpu = _cpu_seconds(sc.pid)
            time.sleep(3.0)  # shorter than the admin's idle timeout: its clients stay held
            spent = _cpu_seconds(sc.pid) - cpu
        finally:
            for s in held:
                s.close()
            resource.prlimit(sc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        said = "listener api" if who == "listener" else "admin endpoint"
        lines = [line for line in sc.log().splitlines() if "accept failed" in line]
        assert 1 <= len([x for x in lines if said in x]) <= 2, sc.log()[-6000:]
        assert spent < 1.0, f"{spent:.2f}s of CPU in 3s while out of fds: something spins"
        eventually(lambda: sc.get("/live")[0] == 200, 8, "the admin endpoint answers again")
        assert Peer(tmp_path, ca, FRONTEND).echo(port), "the listener did not recover"
    app.close()


def test_idle_admin_connections_are_capped_and_closed(tmp_path: Path, ca: pki.Ca) -> None:
    sc, port, app = _backend(tmp_path, ca)
    idle: list[socket.socket] = []
    with sc:
        before = _threads(sc.pid)
        try:
            for _ in range(300):
                idle.append(_connect(sc.admin_port))
            time.sleep(1.0)
            during = _threads(sc.pid)
            assert during <= before + 32 + 2, f"{during - before} threads for 300 idle admin connections"
            started = time.monotonic()
            for s in idle[:32]:  # the ones being served are closed by the server after the idle timeout
                s.settimeout(10)
                assert s.recv(1) == b"", "an idle admin connection was not closed"
            assert time.monotonic() - started < 8
            eventually(lambda: _threads(sc.pid) <= before + 1, 5, "the admin threads gone")
        finally:
            for s in idle:
                s.close()
        assert sc.get("/live")[0] == 200
    app.close()


def test_a_probe_that_resets_costs_no_traceback(tmp_path: Path, ca: pki.Ca) -> None:
    sc, port, app = _backend(tmp_path, ca)
    with sc:
        for request in (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n" * 50):
            for _ in range(5):
                s = _connect(sc.admin_port)
                s.sendall(request)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                s.close()
        time.sleep(0.5)
        assert sc.get("/live")[0] == 200
        assert "Traceback" not in sc.log() and "Exception occurred" not in sc.log(), sc.log()[-3000:]
    app.close()
