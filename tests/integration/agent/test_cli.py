"""`spiffe-sidecar agent` as an operator runs it: start-up errors, the socket, signals."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from support.agent import REPO, AgentProcess, agent_yaml


def _agent(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_invalid_entry_fails_start_up_naming_file_line_and_field(short_dir: Path) -> None:
    cfg = short_dir / "bad.yaml"
    cfg.write_text("trust_domains:\n  - name: example.org\nentries:\n  - spiffe_id: spiffe://example.org/a\n"
                   "    selectors:\n      - unix:uid:0\n      - unix:uid:root\n")
    done = _agent("--config", str(cfg), "--socket", str(short_dir / "a.sock"))
    assert done.returncode != 0
    assert f"{cfg}:7: entries[0].selectors[1]: invalid selector 'unix:uid:root'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (short_dir / "a.sock").exists()


def test_unknown_key_fails_start_up(short_dir: Path) -> None:
    cfg = short_dir / "bad.yaml"
    cfg.write_text("trust_domains:\n  - name: example.org\n    ca_tll: 1h\n")
    done = _agent("--config", str(cfg))
    assert done.returncode != 0 and f"{cfg}:3: trust_domains[0].ca_tll: unknown key" in done.stderr


def test_second_agent_refuses_a_live_socket_and_stale_sockets_are_replaced(short_dir: Path) -> None:
    cfg = agent_yaml(short_dir, entries=[("spiffe://example.org/a", ["unix:uid:0"])])
    sock_path = short_dir / "run" / "agent.sock"  # parent directory created by the agent
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path.parent.mkdir()
    stale.bind(str(sock_path))
    stale.close()  # a socket file nobody listens on: left over by a crash
    with AgentProcess(cfg, sock_path) as agent:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o777
        second = _agent("--config", str(cfg), "--socket", str(sock_path))
        assert second.returncode != 0 and "another agent is serving it" in second.stderr
        assert agent.proc.poll() is None
        assert agent.stop() == 0  # SIGTERM is a clean stop
    assert not sock_path.exists()


def test_socket_env_var_overrides_the_config(short_dir: Path) -> None:
    cfg = agent_yaml(short_dir, entries=[("spiffe://example.org/a", ["unix:uid:0"])],
                     socket_path=str(short_dir / "from-config.sock"), socket_mode="0700")
    env_sock = short_dir / "from-env.sock"
    args = [sys.executable, "-m", "proxy", "agent", "--config", str(cfg)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
                            env={**os.environ, "PYTHONPATH": str(REPO), "SPIFFE_SIDECAR_AGENT_SOCKET": str(env_sock)})
    try:
        from support.agent import wait_for_socket
        wait_for_socket(env_sock, proc=proc)
        assert stat.S_IMODE(os.stat(env_sock).st_mode) == 0o700
        assert not (short_dir / "from-config.sock").exists()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "agent started" in err and "stopping on SIGTERM" in err


def test_unusable_ca_dir_fails_start_up_with_a_message(short_dir: Path) -> None:
    blocker = short_dir / "not-a-dir"
    blocker.write_text("")
    cfg = agent_yaml(short_dir, entries=[], trust_domains=[{"name": "example.org", "ca_dir": str(blocker)}])
    done = _agent("--config", str(cfg), "--socket", str(short_dir / "c.sock"))
    assert done.returncode != 0
    assert "cannot use ca_dir" in done.stderr and "Traceback" not in done.stderr


def test_state_dir_flag_keeps_the_ca_there_across_restarts(short_dir: Path) -> None:
    cfg = agent_yaml(short_dir, entries=[("spiffe://example.org/a", ["unix:uid:0"])])
    state = short_dir / "flag-state"
    kept: list[set[str]] = []
    for _ in range(2):
        with AgentProcess(cfg, short_dir / "agent.sock", extra_args=["--state-dir", str(state)]) as agent:
            pass
        files = {p.name for p in (state / "ca" / "example.org").glob("authority-*.pem")}
        assert files and all(stat.S_IMODE(os.stat(state / "ca" / "example.org" / f).st_mode) == 0o600 for f in files)
        kept.append(files)
        assert "CA kept in" in agent.log() and "EPHEMERAL" not in agent.log()
    assert kept[0] == kept[1], "the restarted agent made a new CA"
    assert not (short_dir / "agent.state").exists(), "--state-dir did not override state_dir"
