"""Unix workload attestation: what the kernel says about the process calling us.

The caller is identified by the kernel, never by anything it sends: the
accepted Unix socket's SO_PEERCRED gives its pid, and /proc/<pid> gives its
effective uid/gid, supplementary groups, executable and cgroup. Selectors
use SPIRE's unix attestor names (unix:uid, unix:user, unix:gid, unix:group,
unix:supplementary_gid, unix:supplementary_group, unix:path, unix:sha256)
plus unix:cgroup and unix:container_id.

Who is attested: the process that connected, not whoever uses the socket
or the SVID later. As with SPIRE's unix attestor, the kernel records the
peer in SO_PEERCRED at connect() and never updates it, so every call on a
connection (and every renewal of its stream) attests that one process,
re-read from /proc each time. The agent cannot see what happens next:
- a child that inherits the connected socket across fork/exec, or a
  process handed it with SCM_RIGHTS, is served as the connecting process,
  with that process's SVIDs; if the connecting process exits, the next
  call or renewal fails attestation (PERMISSION_DENIED), it never falls
  back to describing the process now holding the socket;
- an X.509-SVID's key or a JWT-SVID handed on (files written by
  `svid fetch --write`, an environment variable, a pipe) is a bearer
  credential: whoever holds it is that identity until it expires;
- an exec() without fork keeps the pid, so the next renewal attests the
  new image (its unix:path and unix:sha256), as it should.
For users: register entries for the process that connects (a launcher,
supervisor or spiffe-helper that fetches for others gets its own
entries, and everything it shares the socket or SVID with acts as it);
give a child its own identity by letting it open its own connection
(Python sockets are not inherited across exec unless made so, PEP 446;
keep it that way); and do not count on attestation to separate
processes that share a connection or an SVID: separate them by uid or
binary, each connecting itself.

PID reuse. A pid is only a name; between connect() and our reads of /proc
the caller may exit and another process take its pid. We hold a pidfd
for the connection (SO_PEERPIDFD where the kernel has it, which names the
very process that connected; else pidfd_open right after accept, checked
against the process start time), read /proc, and only then check that
the pidfd's process is still alive: if it is, the pid still named it
while we read, so the facts are its own.

What "the binary changed" means. A running process keeps the inode it was
exec'd from; the kernel refuses writes to it (ETXTBSY), so a binary is
"swapped" by replacing or removing the file at its path. Then
/proc/PID/exe reads "/path (deleted)", or the file now at /path is another
inode. Either way the path no longer names what runs, and the hash of the
running image is the hash of a file that is gone: we withhold
unix:path and unix:sha256 for such a process (and say so), so an entry
pinned to a binary stops matching at the next renewal while entries that
only name a uid keep matching. The comparison resolves the path inside
the process's own root (/proc/PID/root) so containers compare correctly.

unix:sha256 hashes what /proc/PID/exe opens (the running image), capped by
`size_limit` (0 = no limit, negative = never hash: hashing big binaries is
a denial-of-service vector) and cached by (device, inode, mtime, size).
"""

from __future__ import annotations

import errno
import grp
import hashlib
import os
import pwd
import re
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

from proxy.agent.registry import Selector
from proxy.errors import AttestationError

SO_PEERPIDFD = 77  # Linux 6.5+
_CONTAINER_ID = re.compile(r"([0-9a-f]{64})")
_DELETED = " (deleted)"


@dataclass(frozen=True, slots=True)
class Peer:
    """The process on the other end of an accepted Unix socket.

    Attributes:
        pid / uid / gid: SO_PEERCRED at connect time.
        pidfd: a handle on that very process, or -1 where the kernel has no pidfds.
        start_time: without a pidfd, the process start time (seconds since boot) read at
            accept, so the liveness check can tell the process from a later owner of its pid.
    """

    pid: int
    uid: int
    gid: int
    pidfd: int
    start_time: float = -1.0

    def close(self) -> None:
        """Release the pidfd (call when the connection closes)."""
        if self.pidfd >= 0:
            try:
                os.close(self.pidfd)
            except OSError:
                pass


@dataclass(frozen=True, slots=True)
class Attestation:
    """The selectors observed for a process, plus notes for the operator."""

    pid: int
    selectors: frozenset[Selector]
    notes: tuple[str, ...] = ()


def read_peer(sock: socket.socket) -> Peer:
    """SO_PEERCRED and a pidfd for an accepted Unix socket.

    Raises:
        AttestationError: no credentials (not a Unix socket) or the peer is gone.
    """
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        raise AttestationError(f"cannot read SO_PEERCRED: {exc}") from None
    pid, uid, gid = struct.unpack("3i", creds)
    if pid <= 0:
        raise AttestationError("peer has no pid (connected from another pid namespace?)")
    pidfd = _open_pidfd(sock, pid)
    started = -1.0
    if pidfd < 0:
        started = _start_time(pid)
        if started == float("inf"):
            raise AttestationError(f"pid {pid} exited before it could be attested")
    peer = Peer(pid, uid, gid, pidfd, started)
    try:
        _check_race_winner(peer)
    except BaseException:
        peer.close()
        raise
    return peer


def _check_race_winner(peer: Peer) -> None:
    """Refuse when /proc/PID no longer describes the process that connected.

    SPIRE's "race winner" check: the effective uid in /proc/PID/status must be the
    SO_PEERCRED uid, else the pid may name another process (reused) and every fact
    read from /proc would be that process's.
    """
    try:
        with open(f"/proc/{peer.pid}/status", encoding="utf-8", errors="replace") as f:
            uid_line = next((line for line in f if line.startswith("Uid:")), "")
        euid = int(uid_line.split()[2])
    except (OSError, IndexError, ValueError):
        raise AttestationError(f"pid {peer.pid} exited before it could be attested") from None
    if euid != peer.uid:
        raise AttestationError(f"pid {peer.pid} now runs as uid {euid}, not the connecting uid {peer.uid}: "
                               "the pid may have been reused")
    if not is_alive(peer):
        raise AttestationError(f"pid {peer.pid} exited before it could be attested")


def _open_pidfd(sock: socket.socket, pid: int) -> int:
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4), "little", signed=True)
    except OSError as exc:
        # Only "the kernel has no SO_PEERPIDFD" may fall back to pidfd_open(pid): any other
        # failure (e.g. the peer was already reaped) means the pid may already name another
        # process, whose pidfd we would then hold as if it were the caller's.
        if exc.errno != errno.ENOPROTOOPT:
            raise AttestationError(f"cannot read SO_PEERPIDFD for pid {pid}: {exc}") from None
    accepted = time.clock_gettime(time.CLOCK_BOOTTIME)
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, ProcessLookupError):
            raise AttestationError(f"pid {pid} exited before it could be attested") from None
        return -1
    if _start_time(pid) > accepted + 0.05:
        os.close(fd)
        raise AttestationError(f"pid {pid} was reused by a process started after the connection")
    return fd


def _start_time(pid: int) -> float:
    """Seconds since boot at which pid started (/proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return float("inf")
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def is_alive(peer: Peer) -> bool:
    """True while the peer process has not exited (pidfd readable = exited)."""
    if peer.pidfd < 0:
        if peer.start_time >= 0:
            # No pidfd: the pid is alive *as our peer* only while it still has the start
            # time recorded at accept (a reused pid has a later one).
            now = _start_time(peer.pid)
            return now != float("inf") and now == peer.start_time
        return os.path.exists(f"/proc/{peer.pid}")
    poller = select.poll()
    poller.register(peer.pidfd, select.POLLIN)
    return not poller.poll(0)


def _sha256(image: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := image.read(1024 * 1024):
        h.update(chunk)
    return h.hexdigest()


class Attestor:
    """Reads selectors for peers; holds the executable hash cache.

    Blocking (reads /proc, hashes files): call it from a worker thread.
    """

    def __init__(self, size_limit: int = 64 * 1024 * 1024, proc: str = "/proc", cache_size: int = 256) -> None:
        self.size_limit = size_limit
        self.proc = proc
        self._cache: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def attest(self, peer: Peer) -> Attestation:
        """Observed selectors of the peer, read now.

        Raises:
            AttestationError: the process exited (or its pid was reused) while we read.
        """
        base = f"{self.proc}/{peer.pid}"
        try:
            selectors, notes = self._identity(base)
            exe_sel, exe_notes = self._executable(base)
            selectors += exe_sel + self._cgroup(base)
            notes += exe_notes
        except (FileNotFoundError, ProcessLookupError):
            raise AttestationError(f"pid {peer.pid} exited during attestation") from None
        if not is_alive(peer):
            raise AttestationError(f"pid {peer.pid} exited during attestation")
        return Attestation(peer.pid, frozenset(selectors), tuple(notes))

    def _identity(self, base: str) -> tuple[list[Selector], list[str]]:
        """Effective uid/gid and groups from /proc/PID/status (re-read: setuid happens)."""
        status: dict[str, list[str]] = {}
        with open(f"{base}/status", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.split()
        uid, gid = int(status["Uid"][1]), int(status["Gid"][1])
        out = [Selector("unix", "uid", str(uid)), Selector("unix", "gid", str(gid))]
        try:
            out.append(Selector("unix", "user", pwd.getpwuid(uid).pw_name))
        except KeyError:
            pass
        out.extend(self._group_selectors("group", "gid", [gid])[1:])
        supp = sorted({int(g) for g in status.get("Groups", [])})
        out.extend(self._group_selectors("supplementary_group", "supplementary_gid", supp))
        return out, []

    @staticmethod
    def _group_selectors(name_key: str, id_key: str, gids: list[int]) -> list[Selector]:
        out = []
        for g in gids:
            out.append(Selector("unix", id_key, str(g)))
            try:
                out.append(Selector("unix", name_key, grp.getgrgid(g).gr_name))
            except KeyError:
                pass
        return out

    def _executable(self, base: str) -> tuple[list[Selector], list[str]]:
        try:
            link = os.readlink(f"{base}/exe")
        except PermissionError:
            return [], ["cannot read /proc/PID/exe (kernel thread or no permission)"]
        except FileNotFoundError:
            if os.path.exists(base):
                return [], ["process has no executable (kernel thread or zombie)"]
            raise
        path = link[: -len(_DELETED)] if link.endswith(_DELETED) else link
        # stat (not open) for the same-file check: stat needs no read permission on the binary
        # (an execute-only binary would make open() fail), opening is only needed to hash it.
        try:
            st = os.stat(f"{base}/exe")
        except PermissionError:
            return [], ["cannot stat /proc/PID/exe (no permission)"]
        if link.endswith(_DELETED) or not self._same_file(base, path, st):
            return [], [f"binary {path} was replaced or removed after the process started; "
                        "unix:path and unix:sha256 withheld"]
        out = [Selector("unix", "path", path)]
        digest, note = self._hash(f"{base}/exe", st)
        if digest:
            out.append(Selector("unix", "sha256", digest))
        return out, [note] if note else []

    @staticmethod
    def _same_file(base: str, path: str, running: os.stat_result) -> bool:
        try:
            on_disk = os.stat(f"{base}/root{path}")
        except OSError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (running.st_dev, running.st_ino)

    def _hash(self, exe: str, st: os.stat_result) -> tuple[str, str]:
        if self.size_limit < 0:
            return "", ""
        if self.size_limit and st.st_size > self.size_limit:
            return "", f"executable is {st.st_size} bytes, over workload_size_limit {self.size_limit}: not hashed"
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        # The cache is shared by worker threads: get() and move_to_end() must be one step, or
        # another thread's eviction in between raises KeyError.
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached, ""
        try:
            with open(exe, "rb") as image:
                digest = _sha256(image)
        except PermissionError:
            return "", "cannot read the executable (no permission): unix:sha256 not available"
        with self._cache_lock:
            self._cache[key] = digest
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return digest, ""

    def _cgroup(self, base: str) -> list[Selector]:
        try:
            with open(f"{base}/cgroup", encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except PermissionError:
            return []
        out: set[Selector] = set()
        for line in lines:
            parts = line.split(":", 2)
            if len(parts) != 3 or not parts[2]:
                continue
            if parts[0] == "0" or parts[1] in ("name=systemd", ""):
                out.add(Selector("unix", "cgroup", parts[2]))
            match = _CONTAINER_ID.search(parts[2])
            if match:
                out.add(Selector("unix", "container_id", match.group(1)))
        return sorted(out)
