"""Start and stop the benchmark's helper processes, each in its own session.

Every process the harness starts gets its own session (process group), so it
can be stopped with all of its children (nginx's worker, a sidecar's helpers)
by group id and never by name, and so /proc accounting can find the whole
group. `ProcessSet` is a context manager: leaving it, normally or by an
exception or Ctrl-C, stops everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


class StartError(RuntimeError):
    """A helper process did not come up; the message carries its log tail."""


@dataclass
class Proc:
    """One started process group: `pid` is also its session and group id."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    """An unused 127.0.0.1 TCP port (the kernel's pick; racy but adequate on a
    machine where the benchmark is the only thing allocating ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: Proc | None, timeout: float = 15.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or raise StartError
    (early, with the log, if the process died instead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise StartError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    tail = proc.log_tail() if proc else ""
    raise StartError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s\n{tail}")


@dataclass
class ProcessSet:
    """The processes of one benchmark run; stops them all on exit."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Proc:
        """Start argv in a new session with output to <workdir>/<name>.log."""
        log = self.workdir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, "wb") as out:
            popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=str(cwd or self.workdir), start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 3.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after `grace`."""
        if proc in self.procs:
            self.procs.remove(proc)
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass

    def stop_sessions(self, sids: list[int]) -> None:
        """Stop the groups whose ids are `sids` (one pair, started for a while)."""
        for proc in [p for p in self.procs if p.pid in sids]:
            self.stop(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def __enter__(self) -> "ProcessSet":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
