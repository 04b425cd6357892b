"""Unit tests for proxy/agent/attest.py that need no real peer process."""

from __future__ import annotations

import builtins
import dataclasses
import errno
import hashlib
import os
import socket
import struct
import threading
from collections import OrderedDict
from pathlib import Path

import pytest

from proxy.agent import attest
from proxy.agent.attest import Attestor
from proxy.errors import AttestationError


def _fake_proc(tmp_path: Path, binary: Path, pid: int = 4242) -> str:
    base = tmp_path / "proc" / str(pid)
    base.mkdir(parents=True)
    (base / "exe").symlink_to(binary)
    (base / "root").symlink_to("/")
    return str(base)


def test_unreadable_executable_keeps_unix_path_and_notes_the_missing_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x7fELF not really")
    base = _fake_proc(tmp_path, binary)
    real_open = builtins.open

    def no_read(file, *args, **kwargs):
        if str(file).endswith("/exe"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_read)
    selectors, notes = Attestor()._executable(base)
    assert [(s.key, s.value) for s in selectors] == [("path", str(binary))]
    assert len(notes) == 1 and "sha256" in notes[0]


def test_hash_cache_hit_survives_a_concurrent_eviction(tmp_path: Path) -> None:
    """Another worker evicting between get() and move_to_end() must not raise KeyError."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"one")
    two.write_bytes(b"two")
    attestor = Attestor(cache_size=1)
    st_one, st_two = os.stat(one), os.stat(two)
    digest, _ = attestor._hash(str(one), st_one)
    assert digest == hashlib.sha256(b"one").hexdigest()

    class Racy(OrderedDict):
        raced = False

        def get(self, key, default=None):
            value = super().get(key, default)
            if not Racy.raced:
                Racy.raced = True
                # Another worker thread hashes a second binary (cache_size=1: evicts this key).
                other = threading.Thread(target=attestor._hash, args=(str(two), st_two))
                other.start()
                other.join(0.5)
            return value

    attestor._cache = Racy(attestor._cache)
    assert attestor._hash(str(one), st_one) == (hashlib.sha256(b"one").hexdigest(), "")


class _FakeSocket:
    """Answers SO_PEERCRED with (pid, uid, gid) and SO_PEERPIDFD with a pidfd or an error."""

    def __init__(self, pid: int, uid: int, gid: int, peerpidfd: OSError | None = None) -> None:
        self.creds = struct.pack("3i", pid, uid, gid)
        self.peerpidfd = peerpidfd

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        if option == socket.SO_PEERCRED:
            return self.creds
        assert option == attest.SO_PEERPIDFD
        if self.peerpidfd is not None:
            raise self.peerpidfd
        return os.pidfd_open(os.getpid()).to_bytes(4, "little", signed=True)


def _record_pidfd_open(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    opened: list[int] = []
    real = os.pidfd_open

    def pidfd_open(pid: int, *args: int) -> int:
        opened.append(pid)
        return real(pid, *args)

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    return opened


def test_so_peerpidfd_failure_other_than_unsupported_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reaped peer (ESRCH) must not fall back to pidfd_open(pid): the pid may be someone else's."""
    opened = _record_pidfd_open(monkeypatch)
    sock = _FakeSocket(os.getpid(), os.geteuid(), os.getegid(), OSError(errno.ESRCH, "No such process"))
    with pytest.raises(AttestationError):
        attest.read_peer(sock)  # type: ignore[arg-type]
    assert opened == []


def test_so_peerpidfd_unsupported_falls_back_to_pidfd_open(monkeypatch: pytest.MonkeyPatch) -> None:
    opened = _record_pidfd_open(monkeypatch)
    sock = _FakeSocket(os.getpid(), os.geteuid(), os.getegid(), OSError(errno.ENOPROTOOPT, "Protocol not available"))
    peer = attest.read_peer(sock)  # type: ignore[arg-type]
    try:
        assert opened == [os.getpid()] and peer.pidfd >= 0 and attest.is_alive(peer)
    finally:
        peer.close()


def test_peer_whose_effective_uid_is_not_the_connecting_uid_is_refused() -> None:
    sock = _FakeSocket(os.getpid(), os.geteuid() + 4242, os.getegid())
    with pytest.raises(AttestationError, match="uid"):
        attest.read_peer(sock)  # type: ignore[arg-type]


def test_without_pidfd_liveness_compares_the_start_time_recorded_at_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfds(pid: int, *args: int) -> int:
        raise AttributeError("pidfd_open")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    sock = _FakeSocket(os.getpid(), os.geteuid(), os.getegid(), OSError(errno.ENOPROTOOPT, "Protocol not available"))
    peer = attest.read_peer(sock)  # type: ignore[arg-type]
    assert peer.pidfd == -1
    assert peer.start_time == attest._start_time(os.getpid())
    assert attest.is_alive(peer)
    # The same pid now started later: another process took it.
    reused = dataclasses.replace(peer, start_time=peer.start_time - 1.0)
    assert not attest.is_alive(reused)
