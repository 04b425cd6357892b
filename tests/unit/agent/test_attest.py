"""Unit tests for proxy/agent/attest.py that need no real peer process."""

from __future__ import annotations

import builtins
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import pytest

from proxy.agent import attest
from proxy.agent.attest import Attestor


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
