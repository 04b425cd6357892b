"""The listener side of TPROXY: IP_TRANSPARENT before bind, and the original destination from getsockname().

Plain loopback connections are enough to show the switch: an accepted socket
inherits IP_TRANSPARENT from its listener, and destination_of then answers
with the socket's own address without asking conntrack. The real TPROXY
path through iptables runs in tests/e2e/netns/test_tproxy_pods.py.
"""

from __future__ import annotations

import os
import socket

import pytest

from proxy.interception.original_dst import tproxy_destination
from proxy.runtime.sockets import destination_of, is_transparent, open_listening_socket


def _accept_one(listener: socket.socket, family: int) -> tuple[socket.socket, socket.socket]:
    listener.setblocking(True)
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect(listener.getsockname()[:2])
    conn, _ = listener.accept()
    return client, conn


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_a_transparent_listener_hands_its_flag_to_accepted_sockets_and_their_destination_is_their_own_address(
        host: str, family: int) -> None:
    if os.geteuid() != 0:
        pytest.fail("NETNS TESTS NOT RUN: IP_TRANSPARENT needs root (CAP_NET_ADMIN)", pytrace=False)
    with open_listening_socket(host, 0, transparent=True) as listener:
        assert is_transparent(listener)
        client, conn = _accept_one(listener, family)
        with client, conn:
            assert is_transparent(conn)
            assert destination_of(conn) == tproxy_destination(conn) == (host, listener.getsockname()[1])


def test_an_ordinary_listener_is_not_transparent() -> None:
    with open_listening_socket("127.0.0.1", 0) as listener:
        assert not is_transparent(listener)
        client, conn = _accept_one(listener, socket.AF_INET)
        with client, conn:
            assert not is_transparent(conn)


def test_an_ipv4_mapped_local_address_comes_back_as_ipv4() -> None:
    class Mapped:
        family = socket.AF_INET6

        def getsockname(self) -> tuple[str, int, int, int]:
            return ("::ffff:10.200.1.11", 8080, 0, 0)

        def getsockopt(self, level: int, optname: int, buflen: int = 0) -> bytes:
            raise OSError

    assert tproxy_destination(Mapped()) == ("10.200.1.11", 8080)
