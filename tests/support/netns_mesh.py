"""A mesh of pods: the real agent, the real sidecars, the real rules (netns suites).

A Mesh wraps a support.netns.PodNetwork: `start_agent()` runs
`spiffe-sidecar agent` with one entry per pod (spiffe://example.org/<pod>,
selected by the pod's gid), `start_sidecars()` installs each pod's rules and
runs `spiffe-sidecar run` inside it, `stop()` ends every process. The
`open_mesh` fixture (tests/e2e/netns/conftest.py) ties them to a test module.

Why gids and not uids: this machine's Python lives under /root (mode 0700),
unreadable by any other uid, so a sidecar under uid 1337 could not import its
own packages. The sidecars keep uid 0 and each gets a gid of its own, which
both the agent's entries (unix:gid) and the rules (--proxy-gid) key on. The
uid exemption itself is proven in test_iptables_pods.py with uid 1337.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from support.netns import PodNetwork

INBOUND, OUTBOUND, ADMIN, HEALTH_PORT = 15006, 15001, 15000, 8081
FIRST_GID = 1337


def wait_for(log: Path, marker: str, what: str, timeout: float = 20.0) -> None:
    """Poll a log file for a marker (bounded): the process's own signal that it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready within {timeout:.0f}s:\n{log.read_text(errors='replace') if log.exists() else '(no log)'}")


class Mesh:
    """Pods plus the agent and sidecar processes (stopped in reverse order by stop())."""

    def __init__(self, net: PodNetwork, workdir: Path) -> None:
        self.net, self.workdir = net, workdir
        self.socket = workdir / "agent.sock"
        self.gids = {name: FIRST_GID + i for i, name in enumerate(net.pods)}
        self.procs: list[subprocess.Popen[bytes]] = []
        #: extra `iptables install` flags per pod (e.g. --inbound-mode tproxy)
        self.install_extra: dict[str, tuple[str, ...]] = {}
        #: what follows the interpreter to reach the CLI (a launcher script may stand in for -m proxy)
        self.entry: list[str] = ["-m", "proxy"]

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a process whose output goes to `log`; stop() ends it."""
        proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_agent(self) -> None:
        """The embedded agent: one entry per pod, spiffe://example.org/<pod> for the pod's gid."""
        entries = "".join(f'  - {{spiffe_id: spiffe://example.org/{name}, selectors: ["unix:gid:{gid}"]}}\n'
                          for name, gid in self.gids.items())
        config = self.workdir / "agent.yaml"
        config.write_text(f'socket_path: {self.socket}\nsocket_mode: "0777"\nstate_dir: {self.workdir / "state"}\n'
                          f"trust_domains: [{{name: example.org}}]\nentries:\n{entries}")
        self.spawn([sys.executable, "-m", "proxy", "agent", "--config", str(config)], self.workdir / "agent.log")
        wait_for(self.workdir / "agent.log", "agent started", "agent")

    def install_rules(self, name: str) -> None:
        """`spiffe-sidecar iptables install` in the pod, exempting its sidecar's gid."""
        self.net[name].sidecar_cli("iptables", "install", "--proxy-gid", str(self.gids[name]), "--inbound-port",
                                   str(INBOUND), "--outbound-port", str(OUTBOUND),
                                   "--exclude-inbound-ports", f"{ADMIN},{HEALTH_PORT}",
                                   *self.install_extra.get(name, ()))

    def start_sidecars(self, configs: Mapping[str, str], policy: str) -> None:
        """Install rules and start `spiffe-sidecar run` in each named pod; wait until all are ready.

        "{socket}" in a config becomes the agent's socket path; policy.yaml sits beside it.
        """
        logs = {name: self._start_sidecar(name, config.replace("{socket}", str(self.socket)), policy)
                for name, config in configs.items()}
        for name, log in logs.items():
            wait_for(log, "ready:", f"sidecar {name}")

    def _start_sidecar(self, name: str, config: str, policy: str) -> Path:
        self.install_rules(name)
        directory = self.workdir / name
        directory.mkdir()
        (directory / "sidecar.yaml").write_text(config)
        (directory / "policy.yaml").write_text(policy)
        argv = ["ip", "netns", "exec", self.net[name].netns, "setpriv", f"--regid={self.gids[name]}", "--clear-groups",
                "--", sys.executable, *self.entry, "run", "--config", str(directory / "sidecar.yaml")]
        self.spawn(argv, directory / "sidecar.log")
        return directory / "sidecar.log"

    def sidecar_log(self, name: str) -> str:
        """What `spiffe-sidecar run` in pod `name` printed so far (access log + diagnostics)."""
        return (self.workdir / name / "sidecar.log").read_text(errors="replace")

    def logs(self) -> str:
        """The last 2000 characters of every log, for failure messages."""
        return "\n".join(f"== {p.relative_to(self.workdir)}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.workdir.rglob("*.log")))

    def stop(self) -> None:
        """Terminate every process (bounded waits), newest first."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
