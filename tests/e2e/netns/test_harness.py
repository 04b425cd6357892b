"""The pod harness itself: it cleans up after failures and refuses to pass silently."""

from __future__ import annotations

import pytest

from support.netns import PodNetwork, our_namespaces, require_netns, sweep_stale

pytestmark = pytest.mark.netns


def test_a_missing_tool_fails_the_test_loudly_instead_of_skipping() -> None:
    with pytest.raises(pytest.fail.Exception, match="NETNS TESTS NOT RUN: missing no-such-netns-tool"):
        require_netns(tools=("no-such-netns-tool",))


def test_pods_reach_each_other_and_leave_no_namespace_behind_even_when_the_test_fails() -> None:
    require_netns()
    sweep_stale()
    with pytest.raises(RuntimeError, match="boom"):
        with PodNetwork(["a", "b"]) as net:
            assert set(our_namespaces()) == {net.node, net["a"].netns, net["b"].netns}
            net["b"].start_banner_server(8080, "app-b")
            assert net["a"].connect(net["b"].ip, 8080) == f"app-b from {net['a'].ip}\n"
            raise RuntimeError("boom")
    assert our_namespaces() == []
