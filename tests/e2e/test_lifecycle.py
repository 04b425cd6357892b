"""Start-up and stop of a sidecar process: fail closed until the first SVID, bounded wait, clean exit."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from support import pki
from support.net import EchoServer, free_port, recv_all
from support.combos import RUNTIMES
from support.sidecar import Identity, SidecarHarness


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_without_an_svid_listeners_refuse_and_startup_gives_up_after_the_bound(runtime: str, tmp_path: Path) -> None:
    port = free_port()
    sc = SidecarHarness(tmp_path, runtime=runtime, engine="python", name="lonely",
                        identity={"workload_api": f"unix://{tmp_path}/no-agent-here.sock"},
                        policy={"api": [{"name": "nobody", "allow": ["spiffe://example.org/nobody"]}]},
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}", "forward_to": "127.0.0.1:9",
                                  "policy": "api"}])
    sc.process.env["SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT"] = "3s"
    sc.process.start()
    try:
        deadline = time.monotonic() + 10
        while True:  # bound at once (fail closed), before any SVID
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, sc.log()
                time.sleep(0.05)
        with sock:
            try:
                assert recv_all(sock) == b""
            except ConnectionResetError:
                pass
        record = sc.wait_record(lambda r: r["listener"] == "api")
        assert record["close_reason"] == "not_ready"
        assert sc.process.proc is not None and sc.process.proc.wait(15) == 1
    finally:
        sc.stop()
    assert "no X.509-SVID within 3s" in sc.log()


def test_first_svid_timeout_from_the_config_file_bounds_the_startup_wait(tmp_path: Path) -> None:
    sc = SidecarHarness(tmp_path, runtime="trio", engine="python", name="impatient",
                        identity={"workload_api": f"unix://{tmp_path}/no-agent-here.sock"},
                        extra={"first_svid_timeout": "2s"})
    sc.process.env.pop("SPIFFE_SIDECAR_FIRST_SVID_TIMEOUT", None)  # the file's value, not a variable
    sc.process.start()
    try:
        assert sc.process.proc is not None and sc.process.proc.wait(15) == 1
    finally:
        sc.stop()
    assert "no X.509-SVID within 2s" in sc.log()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sigterm_stops_the_sidecar_with_exit_code_zero(runtime: str, tmp_path: Path, ca: pki.Ca) -> None:
    echo = EchoServer()
    port = free_port()
    sc = SidecarHarness(tmp_path, runtime=runtime, engine="python", identity=Identity.mint(tmp_path, ca, "/b"),
                        policy={"api": [{"name": "x", "allow": ["spiffe://example.org/a"]}]},
                        inbound=[{"name": "api", "listen": f"127.0.0.1:{port}", "forward_to": f"127.0.0.1:{echo.port}",
                                  "policy": "api"}])
    with sc:
        held = socket.create_connection(("127.0.0.1", port), timeout=5)  # an idle client must not block the stop
        start = time.monotonic()
        assert sc.stop() == 0
        assert time.monotonic() - start < 5
        held.close()
    assert "stopped" in sc.log()
    echo.close()


def test_run_with_an_invalid_config_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "sidecar.yaml"
    config.write_text("identity: {workload_api: unix:///tmp/x.sock}\noutbound:\n"
                      "  - {name: a, listen: 127.0.0.1:1, connect_to: 127.0.0.1:2, expect: spiffe://example.org/b,"
                      " typo: 1}\n")
    run = subprocess.run([sys.executable, "-m", "proxy", "run", "-c", str(config)], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 2
    assert f"{config}:3" in run.stderr and "typo" in run.stderr
