"""What a newcomer meets in the first hour: the sidecar says which SVID it took, why it waits, what is wrong.

Real processes throughout: the agent, `spiffe-sidecar run`, the CLI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from support.agent import AgentProcess, agent_yaml
from support.net import free_port
from support.sidecar import SidecarHarness

FRONTEND, BACKEND = "spiffe://example.org/frontend", "spiffe://example.org/backend"


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A short directory for Unix socket paths (sun_path is 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="fh-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _outbound() -> list[dict[str, str]]:
    return [{"name": "out", "listen": f"127.0.0.1:{free_port()}", "connect_to": "127.0.0.1:1", "expect": BACKEND}]


def test_several_svids_and_none_chosen_logs_a_hint_and_identity_spiffe_id_chooses(short_dir: Path) -> None:
    uid = f"unix:uid:{os.getuid()}"
    cfg = agent_yaml(short_dir, entries=[(FRONTEND, [uid]), (BACKEND, [uid])])
    with AgentProcess(cfg, short_dir / "agent.sock") as agent:
        default = SidecarHarness(short_dir, runtime="trio", engine="python", outbound=_outbound(),
                                 identity={"workload_api": agent.endpoint})
        with default:
            pass
        chosen = SidecarHarness(short_dir, runtime="trio", engine="python", outbound=_outbound(),
                                identity={"workload_api": agent.endpoint, "spiffe_id": BACKEND})
        with chosen:
            pass
    assert f"ready: serving as {FRONTEND}" in default.log()
    assert (f"offers 2 X.509-SVIDs ({FRONTEND}, {BACKEND}); presenting the first, {FRONTEND}. To present "
            f"another, set identity.spiffe_id in {default.config}") in default.log()
    assert f"ready: serving as {BACKEND}" in chosen.log() and "offers 2" not in chosen.log()
