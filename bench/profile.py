#!/usr/bin/env python3
"""Where a spiffe-sidecar's CPU goes under one kind of load (py-spy).

    python bench/profile.py --variant sidecar-trio --load keepalive --side server
    python bench/profile.py --variant sidecar-uvloop --load newconn --seconds 10 --native
    python bench/profile.py --variant haproxy --load keepalive --syscalls    # any variant

Starts the backends and one variant exactly as bench/run.py does, drives one
load (wrk keep-alive, wrk Connection: close, or a bulk transfer) while py-spy
samples one side's process, then prints the functions holding the most
samples, by self time and inclusive. Goals that are missed in RESULTS.md cite
these tables. Needs `pip install py-spy` (and root or ptrace permission).

With --syscalls, strace counts the side's system calls instead and divides
them by the requests (or MB) completed: a per-request syscall budget that can
be compared with haproxy's, since strace slows the process but not the count.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backend import start_backends  # noqa: E402
from bench.load.bulk import run_bulk  # noqa: E402
from bench.load.wrk import run_wrk  # noqa: E402
from bench.orchestrate import raise_fd_limit  # noqa: E402
from bench.peers.base import Endpoints, StartContext  # noqa: E402
from bench.pki import write_pki  # noqa: E402
from bench.procs import ProcessSet  # noqa: E402
from bench.variants import select  # noqa: E402

_LINE = re.compile(r":\d+\)$")
# Leaf frames that are a thread blocked in the kernel waiting for readiness:
# py-spy's idle detection does not always see them, so they are split out.
_WAITING = ("get_events (_io_epoll.py)", "_epoll_wait (_io_epoll.py)", "select (selectors.py)",
            "epoll_wait", "epoll_pwait", "__epoll_wait_nocancel")
# Frames that mean the whole sample is a thread parked on a lock or condition
# (e.g. a config-reload watcher); with --native py-spy counts those as active.
_PARKED = {"Condition.wait (threading.py)", "Event.wait (threading.py)", "PyThread_acquire_lock_timed",
           "lock_PyThread_acquire_lock"}


def drive(ep: Endpoints, load: str, seconds: float, done: list[float]) -> threading.Thread:
    """Run the load in a thread (the sampler runs in the foreground meanwhile);
    append the units of work completed (requests, or MB for bulk) to `done`."""
    def work() -> None:
        if load == "bulk":
            assert ep.bulk is not None
            done.append(run_bulk(*ep.bulk, nbytes=int(100e6 * seconds), timeout=seconds * 6).nbytes / 1e6)
        else:
            done.append(run_wrk(ep.http_url, seconds=seconds, connections=32 if load == "keepalive" else 16,
                                close=load == "newconn").requests)
    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def count_syscalls(pids: list[int], seconds: float, out: Path) -> None:
    """strace -c the processes for `seconds`, summary into `out`."""
    argv = ["strace", "-c", "-f", "-q", "-o", str(out)] + [a for p in pids for a in ("-p", str(p))]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(2)
        proc.wait(timeout=30)


def syscall_table(summary: str, units: float, unit: str, top: int) -> str:
    """strace -c's table as calls per unit of work."""
    rows = []
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            rows.append((calls / units, parts[-1]))
    rows.sort(reverse=True)
    total = sum(c for c, _ in rows)
    out = [f"{units:.0f} {unit} completed; {total:.1f} syscalls per {unit[:-1]}", "",
           f"| calls per {unit[:-1]} | syscall |", "|---:|---|"]
    return "\n".join(out + [f"| {c:.2f} | {name} |" for c, name in rows[:top]])


def frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)': aggregate per function."""
    frame = _LINE.sub(")", frame)
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else name


def tables(raw: str, top: int) -> str:
    """Top functions by self and by inclusive samples, from py-spy's raw format."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        n = int(count)
        if frames[-1].startswith(_WAITING) or any(f.split(" (")[0] in _PARKED or f in _PARKED for f in frames):
            waiting += n
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"{total} samples on CPU (percentages below are of these); {waiting} more waiting (epoll, locks)"]
    for title, counter in (("self", self_c), ("inclusive", incl)):
        out += ["", f"| {title} % | function |", "|---:|---|"]
        out += [f"| {c / max(total, 1) * 100:.1f} | `{f}` |" for f, c in counter.most_common(top)]
    return "\n".join(out)


def sample_stacks(a: argparse.Namespace, pid: int | None, raw_path: Path, loader: threading.Thread) -> str:
    """py-spy the process while the load runs; return the tables."""
    # --native needs to pause the target to unwind C frames; otherwise don't perturb it.
    cmd = ["py-spy", "record", "-p", str(pid), "-d", str(int(a.seconds)), "-r", "250", "-f", "raw",
           "-o", str(raw_path)] + (["--native"] if a.native else ["--nonblocking"])
    spy = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds + 60)
    loader.join(timeout=a.seconds * 6 + 30)
    if spy.returncode != 0:
        raise SystemExit(f"py-spy failed: {(spy.stdout + spy.stderr).strip()[:400]}")
    return tables(raw_path.read_text(), a.top)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="sidecar-trio")
    p.add_argument("--load", choices=("keepalive", "newconn", "bulk"), default="keepalive")
    p.add_argument("--side", choices=("client", "server"), default="server")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--native", action="store_true", help="include C/Cython frames (py-spy --native)")
    p.add_argument("--syscalls", action="store_true", help="count syscalls per unit of work (strace)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    a = p.parse_args(argv)
    tool = "strace" if a.syscalls else "py-spy"
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} not installed: " + ("apt-get install strace" if a.syscalls else "pip install py-spy"))
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="spiffe-bench-prof-", dir="/tmp"))
    try:
        with ProcessSet(workdir) as procs:
            ctx = StartContext(procs, write_pki(workdir / "pki"), start_backends(procs, workdir), workdir)
            ep = select([a.variant])[0].start(ctx)
            run_wrk(ep.http_url, seconds=1, connections=8, close=False)  # warm-up
            side = next(s for s in ep.sides if s.label == a.side)
            raw_path = workdir / "raw.txt"
            done: list[float] = []
            loader = drive(ep, a.load, a.seconds, done)
            if a.syscalls:
                count_syscalls(side.members(), a.seconds + 0.5, raw_path)
                loader.join(timeout=a.seconds * 6 + 30)
                unit = "MB" if a.load == "bulk" else "requests"
                report = syscall_table(raw_path.read_text(), done[0] if done else float("nan"), unit, a.top)
                kind = "syscalls"
            else:
                report, kind = sample_stacks(a, side.sid, raw_path, loader), "py-spy"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    dest = a.out / f"{'syscalls' if a.syscalls else 'profile'}-{a.variant}-{a.load}-{a.side}.md"
    dest.write_text(f"# {kind}: {a.variant}, {a.load} load, {a.side} side\n\n{report}\n")
    print(dest.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
