"""README's "Using it" commands, run in order as a user pastes them, each checked against what it says.

The commands are taken from README.md itself and run verbatim (``spiffe-sidecar``
is this venv's console script), with real processes: the embedded agent in the
background, the Workload API over its Unix socket, a real sidecar. Only the
machine-specific values the README itself tells the user to adapt are changed
in a private copy of examples/: the agent socket's path (a fixed /tmp name
could collide with another run), the listen ports (free ones), and the uid/gid
the example entries grant (README: "put your `id -u` there"); the agent's
state directory (its CA) is this run's own too.

Long-running commands are started, probed (the sidecar's /ready answers 200,
``svid watch`` prints an update), then stopped with Ctrl-C (SIGINT): exit 0.
A README edit that adds, drops or reorders a command fails here until this
test knows what the command should do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
from support.agent import wait_for_socket

from proxy.demo.interpreter import interpreter_env
from proxy.demo.processes import free_port

REPO = Path(__file__).resolve().parents[2]
SOCKET = "/tmp/spiffe-sidecar/agent.sock"  # what examples/ and README say
BACKEND = "spiffe://example.org/backend"

pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    """The first ``sh`` block under "## Using it", one command per line, comments removed."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using it\n"):]
    block = section[section.index("```sh\n") + len("```sh\n"):]
    block = block[:block.index("```")]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


class Session:
    """One shell: its working directory, its exported variables, its background jobs."""

    def __init__(self, workdir: Path, socket: Path) -> None:
        self.dir, self.socket = workdir, socket
        self.env = interpreter_env(base={k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")})
        # The agent keeps its CA in a state directory (/var/lib/spiffe-sidecar for root): this run's own.
        self.env["SPIFFE_SIDECAR_AGENT_STATE_DIR"] = str(workdir / "state")
        script = Path(sys.executable).parent / "spiffe-sidecar"
        self.entry = [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]
        self.jobs: list[subprocess.Popen[str]] = []
        self.agent: subprocess.Popen[str] | None = None
        self.admin = ""  # the sidecar's admin URL

    def argv(self, command: str) -> list[str]:
        words = shlex.split(command.replace(SOCKET, str(self.socket)))
        assert words[0] == "spiffe-sidecar", command
        return [*self.entry, *words[1:]]

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command), cwd=self.dir, env=self.env, capture_output=True, text=True,
                              timeout=60)

    def start(self, command: str) -> subprocess.Popen[str]:
        n = len(self.jobs)
        with open(self.dir / f"job{n}.out", "w") as out, open(self.dir / f"job{n}.log", "w") as log:
            proc = subprocess.Popen(self.argv(command.rstrip("&").strip()), cwd=self.dir, env=self.env, text=True,
                                    stdout=out, stderr=log, start_new_session=True)
        self.jobs.append(proc)
        return proc

    def job_log(self, proc: subprocess.Popen[str]) -> str:
        """A background job's stderr so far."""
        return (self.dir / f"job{self.jobs.index(proc)}.log").read_text(errors="replace")

    def job_output(self, proc: subprocess.Popen[str]) -> str:
        """A background job's stdout so far."""
        return (self.dir / f"job{self.jobs.index(proc)}.out").read_text(errors="replace")

    def interrupt(self, proc: subprocess.Popen[str]) -> int:
        """Ctrl-C, then wait (bounded)."""
        proc.send_signal(signal.SIGINT)
        return proc.wait(30)

    def close(self) -> None:
        for proc in self.jobs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def private_examples(target: Path, socket: Path) -> dict[str, int]:
    """Copy examples/ with this run's socket, free ports and our uid/gid; returns {old port: new}."""
    shutil.copytree(REPO / "examples", target / "examples")
    ports: dict[str, int] = {}

    def new_port(match: re.Match[str]) -> str:
        ports.setdefault(match.group(2), free_port())
        return f"{match.group(1)}{ports[match.group(2)]}"

    for name in ("agent.yaml", "sidecar.yaml"):
        path = target / "examples" / name
        text = path.read_text().replace(SOCKET, str(socket))
        text = re.sub(r"(listen: [0-9.]+:)(\d+)", new_port, text)
        text = text.replace("unix:uid:0", f"unix:uid:{os.getuid()}").replace("unix:gid:0", f"unix:gid:{os.getgid()}")
        path.write_text(text)
    return {old: new for old, new in ports.items()}


def _eventually(probe: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[str],
                log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        assert proc.poll() is None, f"{what}: exited {proc.returncode}\n{log()}"
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s\n{log()}")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.fixture
def session() -> Iterator[Session]:
    workdir = Path(tempfile.mkdtemp(prefix="readme-"))  # short: a Unix socket path has 107 bytes
    shell = Session(workdir, workdir / "agent.sock")
    try:
        yield shell
    finally:
        shell.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _ok(session: Session, cmd: str) -> subprocess.CompletedProcess[str]:
    done = session.run(cmd)
    assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done


def _agent(session: Session, cmd: str) -> None:
    session.agent = session.start(cmd)
    wait_for_socket(session.socket, proc=session.agent)  # type: ignore[arg-type]


def _export(session: Session, cmd: str) -> None:
    name, value = cmd.removeprefix("export ").split("=", 1)
    session.env[name] = value.replace(SOCKET, str(session.socket))


def _fetch_all(session: Session, cmd: str) -> None:
    out = _ok(session, cmd).stdout
    assert out.count("SPIFFE ID: ") == 3 and "spiffe://example.org/frontend (default)" in out, out


def _fetch_backend(session: Session, cmd: str) -> None:
    out = _ok(session, cmd).stdout
    assert re.findall(r"SPIFFE ID: (\S+)", out) == [BACKEND], out
    assert (session.dir / "certs" / "svid.pem").exists() and (session.dir / "certs" / "svid_key.pem").exists()


def _jwt(session: Session, cmd: str) -> None:
    done = _ok(session, cmd)
    assert "subject: spiffe://example.org/frontend" in done.stderr and done.stdout.count(".") == 2


def _explain(session: Session, cmd: str) -> None:
    assert "decision:  ALLOW" in _ok(session, cmd).stdout


def _sidecar(session: Session, cmd: str) -> None:
    proc = session.start(cmd)
    _eventually(lambda: _get(f"{session.admin}/ready")[0] == 200, 30, "the sidecar is ready", proc,
                lambda: session.job_log(proc))
    assert json.loads(_get(f"{session.admin}/identity")[1])["spiffe_id"] == BACKEND
    assert session.interrupt(proc) == 0, session.job_log(proc)
    assert "offers 3 X.509-SVIDs" not in session.job_log(proc)  # chosen by identity.spiffe_id: no hint


def _watch(session: Session, cmd: str) -> None:
    proc = session.start(cmd)
    _eventually(lambda: "SPIFFE ID: " in session.job_output(proc), 20, "svid watch prints an update", proc,
                lambda: session.job_log(proc))
    assert "--- update 1" in session.job_output(proc)
    assert session.interrupt(proc) == 0, session.job_log(proc)


#: README's commands in order, each with what it must do.
EXPECTED: list[tuple[str, Callable[[Session, str], object]]] = [
    ("spiffe-sidecar agent -c examples/agent.yaml &", _agent),
    (f"export SPIFFE_ENDPOINT_SOCKET=unix://{SOCKET}", _export),
    ("spiffe-sidecar svid fetch", _fetch_all),
    (f"spiffe-sidecar svid fetch --spiffe-id {BACKEND} --write ./certs", _fetch_backend),
    ("spiffe-sidecar jwt fetch --audience spiffe://example.org/ledger", _jwt),
    ("spiffe-sidecar policy check examples/policy.yaml", _ok),
    ("spiffe-sidecar policy explain --config examples/sidecar.yaml --listener api"
     " --peer spiffe://example.org/frontend", _explain),
    ("spiffe-sidecar iptables install --dry-run", _ok),
    ("spiffe-sidecar run -c examples/sidecar.yaml", _sidecar),
    ("spiffe-sidecar svid watch", _watch),
]


def test_readme_using_it_commands_work_pasted_in_order(session: Session) -> None:
    assert readme_commands() == [cmd for cmd, _ in EXPECTED], "README's commands changed: say here what each does"
    ports = private_examples(session.dir, session.socket)
    session.admin = f"http://127.0.0.1:{ports['15000']}"
    for cmd, check in EXPECTED:
        check(session, cmd)
    assert session.agent is not None and session.agent.poll() is None, "the agent kept running in the background"
    assert session.interrupt(session.agent) == 0, session.job_log(session.agent)
