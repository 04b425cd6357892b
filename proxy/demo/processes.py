"""Sidecar subprocesses for the demo and the tests: start, wait for ready, read records, stop.

Each sidecar is ``<python> -m proxy run -c <config>`` with stdout (the
connection records, JSON lines) and stderr (diagnostics) in files, so a
crash leaves its evidence behind and nothing blocks on a full pipe.
``stop`` sends SIGTERM, waits, then SIGKILLs: every process started here
is reaped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from proxy.demo.interpreter import interpreter_env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copied interpreter's environment (``interpreter_env``), minus the caller's Workload API address."""
    env = interpreter_env()
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    env.update(extra or {})
    return env


class SidecarProcess:
    """One ``spiffe-sidecar run`` subprocess.

    Args:
        name: label for messages and log file names.
        config: the sidecar.yaml path.
        workdir: where stdout/stderr files go.
        python: the interpreter to run (a copy gives the process its own unix:path).
        env: extra environment (e.g. SPIFFE_SIDECAR_NO_EXTENSIONS=1).
    """

    def __init__(self, name: str, config: Path, workdir: Path, *, python: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self.stdout_path = workdir / f"{name}.records.jsonl"
        self.stderr_path = workdir / f"{name}.log"
        self.python = python or sys.executable
        self.env = python_env(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SidecarProcess:
        """Launch the process (returns at once; see wait_ready)."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([self.python, "-m", "proxy", "run", "-c", str(self.config)],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        """Everything the sidecar wrote to stderr so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict[str, Any]]:
        """The connection records written so far (complete lines only)."""
        return self._lines("connection")

    def request_records(self) -> list[dict[str, Any]]:
        """The per-request records of HTTP listeners written so far (issue 13; same stream, other event)."""
        return self._lines("request")

    def reauth_records(self) -> list[dict[str, Any]]:
        """The re-authentication records written so far (issue 11.2; same stream, other event)."""
        return self._lines("reauthentication")

    def _lines(self, event: str) -> list[dict[str, Any]]:
        try:
            text = self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("event", "connection") == event:
                    out.append(record)
        return out

    def count(self, needle: str) -> int:
        """How many diagnostic lines contain ``needle``."""
        return sum(1 for line in self.log().splitlines() if needle in line)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the "ready:" line; raises RuntimeError with the log on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready: " in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sidecar {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"sidecar {self.name} not ready after {timeout:g}s:\n{self.log()}")

    def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode
