"""Every renewal re-attests the caller: what changed since issuance counts.

"The binary changed" means the file at the process's unix:path is no longer
the image it runs (replaced by rename, or deleted; a running binary cannot
be rewritten in place: ETXTBSY). The agent then withholds unix:path and
unix:sha256 for that process, so an entry pinned to the binary stops
matching at the next renewal.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from proxy.demo.interpreter import copy_interpreter
from support.agent import read_until_status, start_watch


def test_swapped_binary_is_refused_at_its_next_renewal(agent_factory, short_dir: Path) -> None:
    binary = short_dir / "bin" / "python-workload"
    binary.parent.mkdir()
    copy_interpreter(binary)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    agent = agent_factory([("spiffe://example.org/pinned",
                            [f"unix:uid:{os.getuid()}", f"unix:path:{binary}", f"unix:sha256:{digest}"])],
                          x509_svid_ttl="3s")
    proc, lines = start_watch(agent.endpoint, 20.0, python=str(binary))
    try:
        first = lines.next(timeout=15)
        assert first["svids"][0]["spiffe_id"] == "spiffe://example.org/pinned"
        replacement = binary.with_name("python-new")
        replacement.write_bytes(binary.read_bytes() + b"\0trojan")
        replacement.chmod(0o755)
        os.replace(replacement, binary)  # what installers do; the running process keeps the old inode
        swapped_at = time.time()
        messages, status = read_until_status(lines, timeout=10)
    finally:
        proc.kill()
        proc.wait(10)
    assert status["code"] == "PERMISSION_DENIED", (status, agent.log())
    assert "replaced or removed after the process started" in status["message"]
    assert f"unix:uid:{os.getuid()}" in status["message"]
    assert all(m["t"] < swapped_at + 0.5 for m in messages)  # nothing renewed after the swap
    assert time.time() - swapped_at < 5  # refused at the next renewal (TTL 3s -> every 1.5s)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to drop to another uid")
def test_process_that_drops_its_uid_is_refused_at_its_next_renewal(agent_factory) -> None:
    agent = agent_factory([("spiffe://example.org/root-only", ["unix:uid:0"])], x509_svid_ttl="3s")
    proc, lines = start_watch(agent.endpoint, 20.0, setuid=65534)
    try:
        messages, status = read_until_status(lines, timeout=15)
    finally:
        proc.kill()
        proc.wait(10)
    assert messages and messages[0]["svids"][0]["spiffe_id"] == "spiffe://example.org/root-only"
    assert status["code"] == "PERMISSION_DENIED", (status, agent.log())
    assert "unix:uid:65534" in status["message"]
