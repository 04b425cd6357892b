"""SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on real sockets behind a real REDIRECT.

Each test builds a one-pod network namespace, adds a nat REDIRECT for one
destination port to a local listener, dials some other address and asserts
the accepted socket reports the address that was dialled. No mocks: the
kernel's conntrack is the source of truth.
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from proxy.errors import InterceptionError
from proxy.interception.original_dst import original_destination
from support.netns import PodNetwork, entered, require_netns, sweep_stale

pytestmark = pytest.mark.netns


@pytest.fixture
def pod() -> Iterator["PodNetwork"]:
    require_netns()
    sweep_stale()
    with PodNetwork(["solo"], subnet=9) as net:
        yield net


def _redirect_and_accept(net: PodNetwork, family: int, dialled: str, listen_on: str) -> tuple[str, int]:
    solo = net["solo"]
    tool = "ip6tables" if family == socket.AF_INET6 else "iptables"
    solo.run([tool, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", "18080"])
    with entered(solo.netns):
        listener = socket.socket(family, socket.SOCK_STREAM)
        client = socket.socket(family, socket.SOCK_STREAM)
    with listener, client:
        listener.bind((listen_on, 18080))
        listener.listen(1)
        listener.settimeout(5)
        client.settimeout(5)
        client.connect((dialled, 80))
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockname()[1] == 18080, "the listener, not port 80, accepted it"
            return original_destination(accepted)


def test_original_destination_recovers_the_dialled_ipv4_address(pod: PodNetwork) -> None:
    assert _redirect_and_accept(pod, socket.AF_INET, "10.200.77.5", "0.0.0.0") == ("10.200.77.5", 80)


def test_original_destination_recovers_the_dialled_ipv6_address(pod: PodNetwork) -> None:
    assert _redirect_and_accept(pod, socket.AF_INET6, "fd00:200:77::5", "::") == ("fd00:200:77::5", 80)


def _dial_loopback(net: PodNetwork) -> tuple[tuple[str, int] | InterceptionError, tuple[str, int]]:
    """Connect to a loopback listener; (what original_destination said, the listener's address)."""
    with entered(net["solo"].netns):
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, client:
        client.settimeout(5)
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            try:
                return original_destination(accepted), listener.getsockname()
            except InterceptionError as exc:
                return exc, listener.getsockname()


def test_original_destination_of_a_tracked_unredirected_connection_is_its_own_address(pod: PodNetwork) -> None:
    pod["solo"].run(["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", "18080"])
    result, listener = _dial_loopback(pod)
    assert result == listener


def test_original_destination_of_an_untracked_connection_says_it_is_not_tracked(pod: PodNetwork) -> None:
    result, _ = _dial_loopback(pod)
    assert isinstance(result, InterceptionError)
    assert "tracked by netfilter" in str(result)


def test_original_destination_refuses_a_unix_socket() -> None:
    left, right = socket.socketpair()
    with left, right, pytest.raises(InterceptionError, match="AF_INET or AF_INET6"):
        original_destination(left)
