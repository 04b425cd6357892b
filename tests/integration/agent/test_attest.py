"""Unix attestation of real processes: what /proc says, and when it must not be believed."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.agent.attest import Attestor, Peer, is_alive, read_peer
from proxy.errors import AttestationError

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _peer(proc: subprocess.Popen) -> Peer:
    return Peer(proc.pid, os.getuid(), os.getgid(), os.pidfd_open(proc.pid))


def _selectors(attestation) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in attestation.selectors:
        out.setdefault(s.key, []).append(s.value)
    return out


@pytest.fixture
def sleeper(short_dir: Path):
    binary = short_dir / "sleeper"
    shutil.copy2(os.path.realpath(SLEEP), binary)
    proc = subprocess.Popen([str(binary), "30"])
    yield binary, proc
    proc.kill()
    proc.wait(10)


def test_selectors_name_uid_gid_path_and_hash_of_the_running_binary(sleeper) -> None:
    binary, proc = sleeper
    got = _selectors(Attestor().attest(_peer(proc)))
    assert got["uid"] == [str(os.getuid())] and got["gid"] == [str(os.getgid())]
    assert got["path"] == [str(binary)]
    assert got["sha256"] == [hashlib.sha256(binary.read_bytes()).hexdigest()]
    assert "user" in got and "cgroup" in got


def test_replaced_or_deleted_binary_withholds_path_and_hash(sleeper) -> None:
    binary, proc = sleeper
    attestor = Attestor()
    peer = _peer(proc)
    assert "sha256" in _selectors(attestor.attest(peer))
    fresh = binary.with_name("fresh")
    shutil.copy2(binary, fresh)
    os.replace(fresh, binary)  # same bytes, another inode: still not the image that runs
    replaced = attestor.attest(peer)
    assert "path" not in _selectors(replaced) and "sha256" not in _selectors(replaced)
    assert any("replaced or removed" in n for n in replaced.notes)
    binary.unlink()
    assert "sha256" not in _selectors(attestor.attest(peer))


def test_hash_is_capped_and_cached(sleeper) -> None:
    binary, proc = sleeper
    capped = Attestor(size_limit=100).attest(_peer(proc))
    assert "sha256" not in _selectors(capped) and any("workload_size_limit" in n for n in capped.notes)
    assert "sha256" not in _selectors(Attestor(size_limit=-1).attest(_peer(proc)))
    attestor = Attestor()
    for _ in range(3):
        attestor.attest(_peer(proc))
    assert len(attestor._cache) == 1


def test_exited_process_cannot_be_attested() -> None:
    proc = subprocess.Popen([SLEEP, "0"])
    peer = _peer(proc)
    proc.wait(10)
    assert not is_alive(peer)
    with pytest.raises(AttestationError):
        Attestor().attest(peer)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to change uid")
def test_uid_is_read_fresh_from_proc_not_from_connect_time(short_dir: Path) -> None:
    path = short_dir / "peer.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    code = ("import os, socket, sys, time; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "sys.stdin.readline(); os.setgid(65534); os.setuid(65534); print('dropped', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        server.settimeout(10)
        conn, _ = server.accept()
        peer = read_peer(conn)
        assert peer.pid == proc.pid and peer.uid == 0 and peer.pidfd >= 0
        assert "0" in _selectors(Attestor().attest(peer))["uid"]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "dropped"
        assert _selectors(Attestor().attest(peer))["uid"] == ["65534"]
        conn.close()
        peer.close()
    finally:
        proc.kill()
        proc.wait(10)
        server.close()
