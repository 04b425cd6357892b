"""Fixtures of the netns suites: `open_mesh(pods)` gives a support.netns_mesh.Mesh with
its agent running, torn down (processes, then namespaces) when the test module ends."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import pytest

from support.netns import PodNetwork, require_netns, sweep_stale
from support.netns_mesh import Mesh


@pytest.fixture(scope="module")
def open_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Sequence[str]], Mesh]]:
    """A factory of meshes torn down at the end of the module (processes, then namespaces)."""
    with contextlib.ExitStack() as stack:
        def open_(pods: Sequence[str]) -> Mesh:
            require_netns(("ip", "iptables", "iptables-save", "setpriv", "tcpdump"))
            sweep_stale()
            net = stack.enter_context(PodNetwork(pods))
            mesh = Mesh(net, tmp_path_factory.mktemp("mesh"))
            stack.callback(mesh.stop)
            mesh.start_agent()
            return mesh
        yield open_
