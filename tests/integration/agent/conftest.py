"""Fixtures for the agent's integration tests: the real agent, real sockets, real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from support.agent import AgentProcess, agent_yaml



@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short directory: Unix socket paths are limited to 107 bytes."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="agt-", dir="/tmp"))
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent_factory(short_dir: Path) -> Iterator[Any]:
    """Start agents with a given config; all are stopped at teardown."""
    started: list[AgentProcess] = []

    def start(entries: Any = None, *, config: Path | None = None, name: str = "agent", **top: Any) -> AgentProcess:
        cfg = config or agent_yaml(short_dir, entries=entries or [], name=f"{name}.yaml", **top)
        agent = AgentProcess(cfg, short_dir / f"{name}.sock").__enter__()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.__exit__(None, None, None)
