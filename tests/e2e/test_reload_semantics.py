"""A config save is applied whole or not at all: never its restart-only half with the rest dropped.

Real sidecar processes with files identities; the config is saved the way an
operator's editor or a ConfigMap update does (atomic replace), and the
effect is observed on real connections.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support import pki
from support.net import EchoServer, free_port
from support.sidecar import BACKEND, FRONTEND, Identity, Peer, SidecarHarness, eventually, fastpath_available, running
from support.sidecar import read_exactly

OTHER = "spiffe://example.org/payments"


def _runtimes() -> list[Any]:
    engine = "fastpath" if fastpath_available() else "python"
    return [pytest.param(("trio", engine), id=f"trio-{engine}"), pytest.param(("uvloop", "python"), id="uvloop-python")]


def _through(port: int) -> bool:
    """One echo through the frontend's outbound listener; False when the sidecar refused the upstream."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"ping")
            got = b""
            while len(got) < 4 and (chunk := sock.recv(4 - len(got))):
                got += chunk
            return got == b"ping"
    except OSError:
        return False


@pytest.mark.parametrize("combo", _runtimes())
def test_tightening_expect_with_a_restart_only_change_applies_expect_and_names_what_waits(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    runtime, engine = combo
    app, b_port, f_port = EchoServer(), free_port(), free_port()
    backend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                             name="backend", inbound=[{"name": "api", "listen": f"127.0.0.1:{b_port}",
                                                       "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                             policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    frontend = SidecarHarness(tmp_path, runtime=runtime, engine=engine, admin=True, name="frontend",
                              identity=Identity.mint(tmp_path, ca, "/frontend"),
                              outbound=[{"name": "to-api", "listen": f"127.0.0.1:{f_port}",
                                         "connect_to": f"127.0.0.1:{b_port}", "expect": BACKEND}])
    with running(backend, frontend):
        assert _through(f_port)

        def save(doc: dict[str, Any]) -> None:
            doc["outbound"][0]["expect"] = OTHER  # reloadable: the backend is no longer wanted
            doc["drain_timeout"] = "7s"  # reloadable (it was restart-only, and dropped the whole save)
            doc["log"]["format"] = "text"  # restart-only: the access log sink is built at start

        frontend.edit_config(save)
        eventually(lambda: "need a restart" in frontend.log(), 5, "the reload's restart warning")
        assert not _through(f_port), "the old upstream is still served after expect was tightened"
        record = frontend.wait_record(lambda r: r["listener"] == "to-api" and r["decision"] == "deny")
        assert record["peer_id"] == BACKEND
        warning = next(line for line in frontend.log().splitlines() if "need a restart" in line)
        assert "log.format" in warning and "drain_timeout" not in warning and "outbound" not in warning
        config = frontend.get_json("/config")
        assert config["outbound"][0]["expect"] == [OTHER] and config["drain_timeout"] in ("7s", 7.0)
        assert config["log"]["format"] != "text", "a restart-only field was reported applied"
        assert not frontend.get_json("/ready")["policy"]["stale"]
    app.close()


@pytest.mark.parametrize("combo", _runtimes())
def test_a_reloaded_drain_timeout_bounds_the_next_drain(combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    runtime, engine = combo
    app, port = EchoServer(), free_port()
    sc = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                        admin=True, drain_timeout="60s",
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                  "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                        policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    with sc:
        sc.edit_config(lambda doc: doc.update(drain_timeout="1s"))
        eventually(lambda: sc.get_json("/config")["drain_timeout"] in ("1s", 1.0), 5, "drain_timeout reloaded")
        assert "need a restart" not in sc.log()
        lingering = Peer(tmp_path, ca, FRONTEND).connect(port)
        lingering.sendall(b"hello")
        assert read_exactly(lingering, 5) == b"hello"
        started = time.monotonic()
        sc.signal(signal.SIGTERM)
        code = sc.wait_exit(10)
        took = time.monotonic() - started
        lingering.close()
    app.close()
    assert code == 0 and took < 1 + 2.5, f"exit took {took:.1f}s after drain_timeout was reloaded to 1s"


INTRUDER = "spiffe://example.org/intruder"
#: The intended policy: everyone of the trust domain but the intruder. Its first half alone is valid and
#: lets the intruder in (deny rules beat allow rules wherever they are written, so the deny comes last).
WHOLE_FIRST = ("policies:\n  api:\n    - name: anyone-here\n      allow: [{trust_domain: example.org}]\n")
WHOLE_SECOND = f"    - name: not-the-intruder\n      deny: [{INTRUDER}]\n"


@pytest.mark.parametrize("combo", _runtimes()[:1])
def test_a_policy_saved_in_place_in_two_parts_is_never_applied_half_written(
        combo: tuple[str, str], tmp_path: Path, ca: pki.Ca) -> None:
    runtime, engine = combo
    app, port = EchoServer(), free_port()
    sc = SidecarHarness(tmp_path, runtime=runtime, engine=engine, identity=Identity.mint(tmp_path, ca, "/backend"),
                        admin=True, inbound=[{"name": "api", "listen": f"127.0.0.1:{port}",
                                              "forward_to": f"127.0.0.1:{app.port}", "policy": "api"}],
                        policy={"api": [{"name": "frontend", "allow": [FRONTEND]}]})
    intruder, other = Peer(tmp_path, ca, INTRUDER), Peer(tmp_path, ca, "spiffe://example.org/other")
    with sc:
        allowed: list[float] = []
        probing = threading.Event()

        def probe() -> None:  # its own thread, so a slow handshake never stretches the writer's pause
            while not probing.is_set():
                if intruder.echo(port):
                    allowed.append(time.monotonic())
                time.sleep(0.02)

        prober = threading.Thread(target=probe, daemon=True)
        with open(sc.policy_path, "r+") as f:  # in place: same inode, truncated, then written in two parts
            f.truncate(0)
            f.write(WHOLE_FIRST)
            f.flush()
            prober.start()
            time.sleep(0.6)
            f.write(WHOLE_SECOND)
        time.sleep(0.5)
        probing.set()
        prober.join(10)
        eventually(lambda: other.echo(port), 5, "the whole policy in force")
        for _ in range(20):
            if intruder.echo(port):
                allowed.append(time.monotonic())
        assert not allowed, f"{len(allowed)} intruder connections allowed by the half-written policy"
        assert sc.get_json("/ready")["policy"]["reloads"] == 1, "the half-written file was loaded"
    app.close()
