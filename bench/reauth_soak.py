"""Soak: long streams through a real sidecar pair across SVID rotations, bounded in time.

    python bench/reauth_soak.py --minutes 10            # default SVID TTL 5m: 4 rotations in 10 minutes
    python bench/reauth_soak.py --minutes 1 --ttl 10s   # quick look
    python bench/reauth_soak.py --engine python --runtime uvloop --relay-thread 0

Starts the embedded agent (SVIDs of ``--ttl``), a backend sidecar (inbound,
``peer_expiry: reauthenticate``), a frontend sidecar (outbound), an echo
app, and ``--streams`` connections that each write a checked byte pattern at
``--rate`` and read it back for ``--minutes``. Reports bytes, disconnects,
corrupted bytes, the backend's re-authentication records by outcome and its
connection records (none should close before the end), RSS and fds at
start and end. Exit status 1 when any stream broke. Not part of the test
suite (tests/e2e/test_reauthentication.py is its short, asserted twin).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.demo.processes import SidecarProcess, free_port  # noqa: E402

APP = "spiffe://example.org/app"
CHUNK = 16384


class Echo:
    """An echo app on 127.0.0.1 (a thread per connection)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while chunk := conn.recv(1 << 16):
                    conn.sendall(chunk)
            except OSError:
                pass


class Stream:
    """One connection writing a checked pattern at a fixed rate and reading it back."""

    def __init__(self, port: int, rate: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.pause = CHUNK / rate if rate > 0 else 0.0
        self.sent = self.received = 0
        self.error: str | None = None
        self.stop = threading.Event()
        self.written = threading.Event()  # the writer is done: `sent` is final
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def pattern(offset: int, n: int) -> bytes:
        return bytes((offset + i) % 251 for i in range(n))

    def _write(self) -> None:
        try:
            while not self.stop.is_set() and self.error is None:
                chunk = self.pattern(self.sent, CHUNK)
                self.sock.sendall(chunk)
                self.sent += len(chunk)
                if self.pause:
                    time.sleep(self.pause)
        except OSError as exc:
            self.error = self.error or f"write failed after {self.sent} bytes: {exc!r}"
        finally:
            self.written.set()

    def _read(self) -> None:
        try:
            # Until the writer is done and every byte it sent came back (a chunk in the middle of
            # sendall is not counted yet), looking again at least every 0.2 s.
            while not (self.written.is_set() and self.received >= self.sent):
                if not select.select([self.sock], [], [], 0.2)[0]:
                    continue
                data = self.sock.recv(65536)
                if not data:
                    self.error = self.error or f"EOF after {self.received} of {self.sent} bytes"
                    return
                if data != self.pattern(self.received, len(data)):
                    self.error = f"corrupted bytes at offset {self.received}"
                    return
                self.received += len(data)
        except OSError as exc:
            self.error = self.error or f"read: {exc!r} after {self.received} bytes"

    def finish(self) -> None:
        """Stop writing, read back what is in flight, then end the stream cleanly (FIN, read to EOF)."""
        self.stop.set()
        for t in self.threads:
            t.join(30)
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.recv(1)
        except OSError as exc:
            self.error = self.error or f"no clean end: {exc!r}"
        self.sock.close()


def _usage(pid: int) -> tuple[int, int]:
    """(RSS KiB, open fds) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _write_configs(d: Path, args: argparse.Namespace, app_port: int) -> tuple[Path, Path, Path, int]:
    sock = d / "agent.sock"
    agent = d / "agent.yaml"
    agent.write_text(json.dumps({"x509_svid_ttl": args.ttl, "trust_domains": [{"name": "example.org"}],
                                 "entries": [{"spiffe_id": APP, "selectors": [f"unix:uid:{os.getuid()}"]}]}))
    b_port, f_port = free_port(), free_port()
    identity = {"workload_api": f"unix://{sock}"}
    (d / "policy.yaml").write_text(json.dumps({"policies": {"api": [{"name": "app", "allow": [APP]}]}}))
    common = {"identity": identity, "runtime": args.runtime, "log": {"level": "info"}}
    backend = d / "backend.yaml"
    backend.write_text(json.dumps({**common, "policy_file": str(d / "policy.yaml"), "inbound": [
        {"name": "api", "listen": f"127.0.0.1:{b_port}", "forward_to": f"127.0.0.1:{app_port}", "policy": "api",
         "peer_expiry": "reauthenticate"}]}))
    frontend = d / "frontend.yaml"
    frontend.write_text(json.dumps({**common, "outbound": [
        {"name": "to-api", "listen": f"127.0.0.1:{f_port}", "connect_to": f"127.0.0.1:{b_port}", "expect": APP}]}))
    return agent, backend, frontend, f_port


def run(args: argparse.Namespace) -> int:
    d = Path(tempfile.mkdtemp(prefix="reauth-soak-"))
    app = Echo()
    agent_cfg, backend_cfg, frontend_cfg, port = _write_configs(d, args, app.port)
    env = {"SPIFFE_SIDECAR_RELAY_THREAD": args.relay_thread}
    env.update({"SPIFFE_SIDECAR_NO_EXTENSIONS": "1"} if args.engine == "python"
               else {"SPIFFE_SIDECAR_REQUIRE_EXTENSIONS": "1"})
    agent = subprocess.Popen([sys.executable, "-m", "proxy", "agent", "--config", str(agent_cfg), "--socket",
                              str(d / "agent.sock")], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=open(d / "agent.log", "wb"))
    sidecars = [SidecarProcess("backend", backend_cfg, d, env=env), SidecarProcess("frontend", frontend_cfg, d, env=env)]
    streams: list[Stream] = []
    try:
        deadline = time.monotonic() + 15
        while not (d / "agent.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for sc in sidecars:
            sc.start()
        for sc in sidecars:
            sc.wait_ready(30)
        start_usage = _usage(sidecars[0].pid)
        streams = [Stream(port, args.rate) for _ in range(args.streams)]
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end and not any(s.error for s in streams):
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            outcomes = Counter(r["outcome"] for r in sidecars[0].reauth_records())
            print(f"{time.strftime('%H:%M:%S')} sent {[s.sent >> 10 for s in streams]} KiB,"
                  f" got {[s.received >> 10 for s in streams]} KiB,"
                  f" re-authentications {dict(outcomes)}", flush=True)
        end_usage = _usage(sidecars[0].pid)
    finally:
        for s in streams:
            s.finish()
        for sc in sidecars:
            sc.stop()
        agent.terminate()
        agent.wait(10)
    return _report(args, streams, sidecars, start_usage, end_usage, d)


def _report(args: argparse.Namespace, streams: list[Stream], sidecars: list[SidecarProcess],
            start: tuple[int, int], end: tuple[int, int], d: Path) -> int:
    backend = sidecars[0]
    broken = [s.error for s in streams if s.error]
    outcomes = Counter(r["outcome"] for r in backend.reauth_records())
    # The streams end themselves (FIN, read to EOF) after the run: anything but "completed" is a failure.
    early = [r for sc in sidecars for r in sc.records() if r["close_reason"] != "completed"]
    report: dict[str, Any] = {
        "minutes": args.minutes, "ttl": args.ttl, "runtime": args.runtime, "engine": args.engine,
        "relay_thread": args.relay_thread, "streams": len(streams),
        "bytes_sent": sum(s.sent for s in streams), "bytes_verified": sum(s.received for s in streams),
        "disconnects": len(broken), "errors": broken, "reauthentications": dict(outcomes),
        "not_completed": [f'{r["close_reason"]}: {r["detail"]}' for r in early],
        "backend_rss_kib": [start[0], end[0]], "backend_fds": [start[1], end[1]],
    }
    print(json.dumps(report, indent=1))
    ok = not broken and not early
    if ok:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"logs kept in {d}", file=sys.stderr)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the streams run (default 10)")
    parser.add_argument("--ttl", default="5m", help="X.509-SVID TTL the agent issues (default 5m)")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams (default 4)")
    parser.add_argument("--rate", type=float, default=256 * 1024, help="bytes/s per stream (default 256 KiB)")
    parser.add_argument("--runtime", choices=("trio", "uvloop"), default="trio")
    parser.add_argument("--engine", choices=("fastpath", "python"), default="fastpath")
    parser.add_argument("--relay-thread", choices=("0", "1"), default="1", help="0: relay on the event loop")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
