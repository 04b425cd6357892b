"""Pods as network namespaces: the harness for transparent-mode tests.

A `PodNetwork` is a "node" namespace holding a bridge, and one namespace per
pod joined to it by a veth pair (pod side `eth0`, 10.200.1.N/24 and
fd00:200:1::N/64, default routes out of eth0 so any address is routable and
iptables sees real forwarding). Nothing is created in the host's own
namespace, and every namespace name carries the test process's pid, so
`close()` (always run, also on failure) and `sweep_stale()` (namespaces of
dead test processes) leave nothing behind. Deleting a namespace deletes its
veth ends with it.

Where the kernel or the user cannot make namespaces, `require_netns()` fails
the test with a message naming what is missing (root, CAP_SYS_ADMIN,
iproute2, iptables): these tests must never pass by not running.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from proxy.errors import InterceptionError
from proxy.interception.original_dst import original_destination

PREFIX = "spfsc"
REPO_ROOT = Path(__file__).resolve().parents[2]
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def require_netns(tools: Sequence[str] = ("ip", "iptables", "iptables-save", "setpriv")) -> None:
    """Fail loudly (never skip) when this machine cannot build pods."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"NETNS TESTS NOT RUN: missing {', '.join(missing)} (apt-get install iproute2 iptables util-linux)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("NETNS TESTS NOT RUN: need root (CAP_SYS_ADMIN for namespaces, CAP_NET_ADMIN for iptables)", pytrace=False)
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        pytest.fail(f"NETNS TESTS NOT RUN: the kernel refused a network namespace (CAP_SYS_ADMIN missing?): {made.stderr.strip()}", pytrace=False)


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def sweep_stale() -> None:
    """Delete namespaces left by test processes that died before their cleanup."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid_text = name[len(PREFIX):].split("-")[0] if name.startswith(PREFIX) else ""
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            _ip("netns", "del", name, check=False)


def our_namespaces() -> list[str]:
    """Namespaces this test process created and has not deleted yet."""
    mine = f"{PREFIX}{os.getpid()}-"
    return [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.startswith(mine)]


def app_python(uid: int | None) -> str:
    """The interpreter for an app-role process (stdlib only) running as `uid`.

    The test's own interpreter may live where other uids cannot read (here
    /root/.pyenv under a 0700 /root), so processes under another uid use the
    system python3 when there is one.
    """
    if uid is None or uid == 0:
        return sys.executable
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def as_uid(argv: Sequence[str], uid: int | None) -> list[str]:
    """argv run under another uid/gid (no supplementary groups), or unchanged."""
    if uid is None:
        return list(argv)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the body with this thread inside `netns`; sockets made there stay there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
        try:
            yield
        finally:
            if _libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's own namespace failed")
    finally:
        os.close(target)
        os.close(home)


_CLIENT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=5)
s.sendall(b"hello\\n")
data = b""
for _ in range(64):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(), end="")
"""

# Like _CLIENT, but a refusal or reset is an answer ("refused: ..."), not a failure.
_CLIENT_TOLERANT = """
import socket
try:
    s = socket.create_connection(('%s', %d), timeout=5)
    s.sendall(b'hello\\n')
    print(s.recv(100).decode(errors='replace'), end='')
except OSError as exc:
    print('refused:', exc)
"""

_BANNER_SERVER = """
import socket, sys
port, banner = int(sys.argv[1]), sys.argv[2]
srv = socket.create_server(("0.0.0.0", port), reuse_port=False)
print("ready", flush=True)
for _ in range(1000):
    conn, peer = srv.accept()
    with conn:
        conn.settimeout(5)
        conn.recv(4096)  # read the request first: closing with unread bytes would send RST
        conn.sendall(f"{banner} from {peer[0]}\\n".encode())
"""


@dataclass
class Pod:
    """One pod: a network namespace with eth0 on the bridge."""

    name: str
    netns: str
    ip: str
    ip6: str
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, uid: int | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the pod (optionally as `uid`) and wait for it."""
        full = ["ip", "netns", "exec", self.netns, *as_uid(argv, uid)]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"in pod {self.name}: {' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def sidecar_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real `spiffe-sidecar` command line inside the pod."""
        return self.run([sys.executable, "-m", "proxy", *args], check=check)

    def iptables_save(self, tool: str = "iptables-save") -> str:
        """The pod's nat table as `tool` prints it, without timestamps or packet counters.

        Chain lines carry counters (":PREROUTING ACCEPT [3:180]") that move
        whenever a stray packet crosses the pod; rules are what we compare.
        """
        text = self.run([tool, "-t", "nat"]).stdout
        lines = (re.sub(r"\[\d+:\d+\]$", "[0:0]", line) for line in text.splitlines() if not line.startswith("#"))
        return "\n".join(lines)

    def try_connect(self, host: str, port: int, *, uid: int | None = None) -> str:
        """Like connect(), but a refused or reset connection returns "refused: ..." instead of failing."""
        result = self.run([app_python(uid), "-c", _CLIENT_TOLERANT % (host, port)], uid=uid, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def connect(self, host: str, port: int, *, uid: int | None = None) -> str:
        """An app in this pod dials host:port in plain TCP; returns what it was told."""
        return self.run([app_python(uid), "-c", _CLIENT, host, str(port)], uid=uid, timeout=15).stdout

    def start_banner_server(self, port: int, banner: str) -> None:
        """An app in this pod listening on `port`, answering "<banner> from <peer ip>"."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", _BANNER_SERVER, str(port), banner],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready or proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise AssertionError(f"app in pod {self.name} did not start on port {port}: {proc.stderr.read() if proc.poll() is not None and proc.stderr else ''}")

    @contextlib.contextmanager
    def original_destination_reporter(self, port: int, host: str = "0.0.0.0") -> Iterator[list[tuple[str, int]]]:
        """A listener on `port` in this pod that tells each client, as JSON, where it
        was really going (via the real original_destination helper) and who it is.

        Yields the list of (original ip, port) it has seen, for assertions.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with entered(self.netns):
            srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(16)
        srv.settimeout(0.2)
        seen: list[tuple[str, int]] = []
        stop = threading.Event()
        thread = threading.Thread(target=_report_loop, args=(srv, seen, stop), daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            stop.set()
            thread.join(5)
            srv.close()

    def stop_processes(self) -> None:
        """Kill the processes this pod started (bounded wait)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self._procs.clear()


def _report_loop(srv: socket.socket, seen: list[tuple[str, int]], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, peer = srv.accept()
        except (TimeoutError, socket.timeout):
            continue
        except OSError:
            return
        with conn:
            try:
                _report_one(conn, peer[0], seen)
            except OSError:
                continue  # the client went away; the test's own assertion will say so


def _report_one(conn: socket.socket, peer_ip: str, seen: list[tuple[str, int]]) -> None:
    conn.settimeout(5)
    conn.recv(4096)  # read the request first: closing with unread bytes would send RST
    try:
        dst: tuple[str, int] | None = original_destination(conn)
    except InterceptionError:
        dst = None  # not tracked by netfilter: the connection was not redirected
    if dst is not None:
        seen.append(dst)
    reply = {"original": list(dst) if dst else None, "peer": peer_ip, "local": list(conn.getsockname()[:2])}
    conn.sendall((json.dumps(reply) + "\n").encode())


class PodNetwork:
    """Pods on one bridge; a context manager that always tears everything down."""

    def __init__(self, names: Sequence[str], subnet: int = 1) -> None:
        self._tag = f"{PREFIX}{os.getpid()}-"
        self.node = f"{self._tag}node"
        self.subnet = subnet
        self.pods: dict[str, Pod] = {}
        self._names = list(names)

    def __getitem__(self, name: str) -> Pod:
        return self.pods[name]

    def __enter__(self) -> "PodNetwork":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        _ip("netns", "add", self.node)
        _ip("-n", self.node, "link", "set", "lo", "up")
        _ip("-n", self.node, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.node, "link", "set", "br0", "up")
        for index, name in enumerate(self._names, start=10):
            self.pods[name] = self._add_pod(name, index)

    def _add_pod(self, name: str, index: int) -> Pod:
        netns = f"{self._tag}{name}"
        ip, ip6 = f"10.200.{self.subnet}.{index}", f"fd00:200:{self.subnet}::{index}"
        pod = Pod(name, netns, ip, ip6)
        _ip("netns", "add", netns)
        _ip("-n", self.node, "link", "add", f"v-{name}", "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.node, "link", "set", f"v-{name}", "master", "br0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", "default", "dev", "eth0")
        _ip("-n", netns, "-6", "route", "add", "default", "dev", "eth0")
        return pod

    def close(self) -> None:
        """Stop pod processes and delete every namespace (veths go with them)."""
        for pod in self.pods.values():
            with contextlib.suppress(Exception):
                pod.stop_processes()
        for netns in [p.netns for p in self.pods.values()] + [self.node]:
            _ip("netns", "del", netns, check=False)
        for netns in our_namespaces():
            _ip("netns", "del", netns, check=False)
