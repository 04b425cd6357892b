"""Start the real agent for tests: as a subprocess (`python -m proxy agent`) or in-process.

    from support.agent import AgentProcess, agent_yaml

    cfg = agent_yaml(tmp_path, entries=[("spiffe://example.org/app", ["unix:uid:0"])], x509_svid_ttl="4s")
    with AgentProcess(cfg, tmp_path / "agent.sock") as agent:
        env = {"SPIFFE_ENDPOINT_SOCKET": agent.endpoint}
        ...
        agent.log()          # stderr so far (one line per event)

Every wait is bounded; a failure to start raises with the agent's stderr.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

# `python` may be a copy of the interpreter (its own unix:path): one helper gives it our packages.
from proxy.demo.interpreter import interpreter_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "examples" / "agent.yaml"
SCRIPTS = REPO / "tests" / "integration" / "agent" / "scripts"


def agent_yaml(directory: Path, *, entries: Sequence[tuple[str, Sequence[str]] | dict[str, Any]],
               trust_domains: Sequence[str | dict[str, Any]] = ("example.org",), name: str = "agent.yaml",
               **top: Any) -> Path:
    """Write an agent.yaml (JSON is YAML) and return its path.

    `entries` items: (spiffe_id, [selectors]) or dicts with the YAML keys;
    `top` adds top-level keys (x509_svid_ttl="4s", socket_path=...).
    """
    doc: dict[str, Any] = dict(top)
    # Each config keeps its CA in its own state directory, never in the machine's default one,
    # so agents of parallel tests never share (or rotate away) each other's authorities.
    doc.setdefault("state_dir", str(directory / f"{Path(name).stem}.state"))
    doc["trust_domains"] = [{"name": t} if isinstance(t, str) else t for t in trust_domains]
    doc["entries"] = [e if isinstance(e, dict) else {"spiffe_id": e[0], "selectors": list(e[1])} for e in entries]
    path = directory / name
    path.write_text(json.dumps(doc, indent=2))
    return path


def wait_for_socket(path: Path, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts on the Unix socket at `path` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode} before listening")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise TimeoutError(f"nothing listening on {path} after {timeout}s")


class AgentProcess:
    """`python -m proxy agent --config CFG --socket SOCK` as a context manager."""

    def __init__(self, config: Path, socket_path: Path, *, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.config = Path(config)
        self.socket_path = Path(socket_path)
        self.endpoint = f"unix://{self.socket_path}"
        self._log_path = self.socket_path.parent / f"{self.socket_path.name}.stderr.log"
        self._args = [sys.executable, "-m", "proxy", "agent", "--config", str(config),
                      "--socket", str(socket_path), *extra_args]
        self._env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        if not re.search(r'^\s*"?state_dir"?\s*:', self.config.read_text(), re.M):  # never the machine's /var/lib
            self._env.setdefault("SPIFFE_SIDECAR_AGENT_STATE_DIR", str(self.socket_path.parent / "agent-state"))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "AgentProcess":
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self._log_path, "wb")
        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=self._log,
                                     env=self._env, cwd=str(REPO))
        try:
            wait_for_socket(self.socket_path, proc=self.proc)
        except Exception as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"agent did not start: {exc}\n{self.log()}") from None
        return self

    def log(self) -> str:
        """The agent's stderr so far."""
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait (bounded), SIGKILL if needed; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return int(self.proc.returncode)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()
        self._log.close()


def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 30.0,
               python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a separate process (a genuinely separate workload)."""
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=interpreter_env(env), cwd=str(REPO))


class JsonLines:
    """Reads a child's stdout JSON lines with bounded waits (a reader thread feeds a queue)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._q: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._q.put(json.loads(line))
        self._q.put(None)

    def next(self, timeout: float) -> Any:
        """The next JSON line; raises TimeoutError after `timeout` seconds."""
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output within {timeout}s") from None
        if item is None:
            raise EOFError(f"process ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return item


def start_watch(endpoint: str, seconds: float, *, python: str = sys.executable, setuid: int | None = None,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], JsonLines]:
    """Start scripts/watch_x509.py as a separate workload process."""
    args = [python, str(SCRIPTS / "watch_x509.py"), endpoint, str(seconds)]
    if setuid is not None:
        args.append(str(setuid))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=interpreter_env(env))
    return proc, JsonLines(proc)


def read_until_status(lines: JsonLines, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages until the final status line, all within `timeout`."""
    deadline = time.monotonic() + timeout
    messages = []
    while True:
        item = lines.next(max(0.1, deadline - time.monotonic()))
        if "code" in item:
            return messages, item
        messages.append(item)
