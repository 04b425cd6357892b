"""What a newcomer meets in the first hour: the sidecar says which SVID it took, why it waits, what is wrong.

Real processes throughout: the agent, `spiffe-sidecar run`, the CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from support.agent import AgentProcess, agent_yaml
from support.net import free_port
from support.sidecar import SidecarHarness

from proxy.demo.interpreter import interpreter_env

FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A short directory for Unix socket paths (sun_path is 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="fh-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _outbound() -> list[dict[str, str]]:
    return [{"name": "out", "listen": f"127.0.0.1:{free_port()}", "connect_to": "127.0.0.1:1", "expect": BACKEND}]


def test_several_svids_and_none_chosen_logs_a_hint_and_identity_spiffe_id_chooses(short_dir: Path) -> None:
    uid = f"unix:uid:{os.getuid()}"
    cfg = agent_yaml(short_dir, entries=[(FRONTEND, [uid]), (BACKEND, [uid])])
    with AgentProcess(cfg, short_dir / "agent.sock") as agent:
        default = SidecarHarness(short_dir, runtime="trio", engine="python", outbound=_outbound(),
                                 identity={"workload_api": agent.endpoint})
        with default:
            pass
        chosen = SidecarHarness(short_dir, runtime="trio", engine="python", outbound=_outbound(),
                                identity={"workload_api": agent.endpoint, "spiffe_id": BACKEND})
        with chosen:
            pass
    assert f"ready: serving as {FRONTEND}" in default.log()
    assert (f"offers 2 X.509-SVIDs ({FRONTEND}, {BACKEND}); presenting the first, {FRONTEND}. To present "
            f"another, set identity.spiffe_id in {default.config}") in default.log()
    assert f"ready: serving as {BACKEND}" in chosen.log() and "offers 2" not in chosen.log()


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=timeout,
                          env=interpreter_env(base=env))


@pytest.mark.parametrize("taken", ["listener", "admin"])
def test_an_address_in_use_names_the_listener_and_its_address(short_dir: Path, taken: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        listen = busy if taken == "listener" else free_port()
        admin = busy if taken == "admin" else free_port()
        (short_dir / "sidecar.yaml").write_text(
            f"identity: {{workload_api: unix://{short_dir}/none.sock}}\n"
            f"outbound:\n  - {{name: payments, listen: 127.0.0.1:{listen}, connect_to: 127.0.0.1:1,"
            f" expect: {BACKEND}}}\nadmin: {{listen: 127.0.0.1:{admin}}}\n")
        done = _cli("run", "-c", str(short_dir / "sidecar.yaml"))
    what = "listener 'payments'" if taken == "listener" else "the admin endpoint"
    assert done.returncode == 1, done.stderr
    assert f"{what} cannot listen on 127.0.0.1:{busy}: Address already in use" in done.stderr, done.stderr


@pytest.mark.parametrize("mistake, where", [
    ("    policy: nosuch\n", "sidecar.yaml:7: inbound[0].policy: no policy 'nosuch'"),
    ("    polcy: api\n", "sidecar.yaml:7: inbound[0].polcy: unknown key (did you mean 'policy'?)"),
])
def test_run_and_policy_check_report_a_bad_config_alike_with_exit_2(short_dir: Path, mistake: str,
                                                                       where: str) -> None:
    (short_dir / "policy.yaml").write_text(f"policies:\n  api:\n    - {{name: a, allow: [{FRONTEND}]}}\n")
    config = short_dir / "sidecar.yaml"
    config.write_text(f"identity: {{workload_api: unix://{short_dir}/none.sock}}\npolicy_file: policy.yaml\n"
                      f"inbound:\n  - name: api\n    listen: 127.0.0.1:{free_port()}\n"
                      f"    forward_to: 127.0.0.1:8080\n{mistake}")
    run = _cli("run", "-c", str(config))
    check = _cli("policy", "check", "--config", str(config))
    assert (run.returncode, check.returncode) == (2, 2), (run.stderr, check.stderr)
    assert where in run.stderr and where in check.stderr, (run.stderr, check.stderr)


def _outbound_yaml() -> str:
    return (f"outbound:\n  - {{name: payments, listen: 127.0.0.1:{free_port()}, connect_to: 127.0.0.1:1,"
            f" expect: {BACKEND}}}\n")


@pytest.mark.parametrize("runtime", ["trio", "uvloop"])
def test_waiting_for_an_agent_that_is_not_there_says_so_every_few_seconds(short_dir: Path, runtime: str) -> None:
    config = short_dir / "sidecar.yaml"
    config.write_text(f"identity: {{workload_api: unix://{short_dir}/none.sock}}\nruntime: {runtime}\n"
                      f"first_svid_timeout: 6s\n{_outbound_yaml()}")
    done = _cli("run", "-c", str(config))
    assert done.returncode == 1, done.stderr
    progress = f"waiting for the first X.509-SVID from unix://{short_dir}/none.sock (5s): reconnecting"
    assert progress in done.stderr and "UNAVAILABLE" in done.stderr, done.stderr
    assert done.stderr.index(progress) < done.stderr.index("no X.509-SVID within 6s")
    assert "does NOT exist" in done.stderr and "registration entry" not in done.stderr  # only what applies


@pytest.mark.parametrize("runtime, cert", [("trio", None), ("uvloop", b"garbage\n")])
def test_identity_files_that_cannot_load_fail_the_start_at_once(short_dir: Path, runtime: str,
                                                                 cert: bytes | None) -> None:
    if cert is not None:
        for name in ("svid.pem", "svid.key", "bundle.pem"):
            (short_dir / name).write_bytes(cert)
    config = short_dir / "sidecar.yaml"
    config.write_text("identity: {files: {cert: svid.pem, key: svid.key, bundle: bundle.pem}}\n"
                      f"runtime: {runtime}\n{_outbound_yaml()}")  # first_svid_timeout: the default 30s
    started = time.monotonic()
    done = _cli("run", "-c", str(config))
    assert done.returncode == 1 and time.monotonic() - started < 20, done.stderr
    why = "cannot read: No such file or directory" if cert is None else "certificate PEM is unreadable"
    assert "cannot use the identity files: " in done.stderr and f"{short_dir}/svid.pem" in done.stderr, done.stderr
    assert why in done.stderr, done.stderr
    assert "Check:" not in done.stderr


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) spiffe_sidecar[.a-z]*: ")


def test_agent_and_sidecar_write_log_lines_in_one_time_format_and_run_takes_log_level(short_dir: Path) -> None:
    cfg = agent_yaml(short_dir, entries=[(FRONTEND, ["unix:uid:4242"])])  # nobody here: a denial to log
    with AgentProcess(cfg, short_dir / "agent.sock") as agent:
        config = short_dir / "sidecar.yaml"
        config.write_text(f"identity: {{workload_api: {agent.endpoint}}}\nfirst_svid_timeout: 2s\n"
                          f"log: {{level: debug}}\n{_outbound_yaml()}")
        quiet = _cli("run", "-c", str(config), "--log-level", "warning")
        chatty = _cli("run", "-c", str(config))
        agent_log = agent.log()
    # Lines that start with a time (continuation lines of a multi-line message do not).
    sidecar_lines = [line for line in (quiet.stderr + chatty.stderr).splitlines() if line[:1].isdigit()]
    agent_lines = [line for line in agent_log.splitlines() if line[:1].isdigit()]
    assert sidecar_lines and agent_lines
    assert [line for line in sidecar_lines + agent_lines if not LOG_LINE.match(line)] == []
    assert " INFO " in chatty.stderr and "waiting up to 2s" in chatty.stderr
    assert " INFO " not in quiet.stderr and " ERROR " in quiet.stderr  # the flag beats log.level: debug
    assert quiet.returncode == chatty.returncode == 1
