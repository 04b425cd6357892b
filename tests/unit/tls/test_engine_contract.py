"""The engine contract (proxy/tls/contract.py) holds at run time where the types cannot say it.

mypy checks both engines against the Protocols (``load_engine`` returns
either as an ``Engine``); the one rule a Protocol cannot express is that a
Relay takes a connection made by its *own* engine. Both engines refuse a
stranger the same way: TypeError, before any byte moves.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest

from support import pki
from support.combos import engine_module
from support.sidecar import material


@pytest.fixture
def fds() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize(("relay_engine", "conn_engine"), [("python", "fastpath"), ("fastpath", "python")])
def test_relay_refuses_a_connection_made_by_the_other_engine(
        relay_engine: str, conn_engine: str, fds: tuple[socket.socket, socket.socket]) -> None:
    ours: Any = engine_module(relay_engine)
    theirs: Any = engine_module(conn_engine)
    ca = pki.make_ca("example.org")
    conn = theirs.ServerContext(material(ca, "/backend")).new_connection(fds[0].fileno())
    try:
        with pytest.raises(TypeError):
            ours.Relay(conn, fds[1].fileno(), 4096)
    finally:
        conn.close()


def test_load_engine_satisfies_the_relay_thread_contract_only_when_compiled() -> None:
    from proxy.runtime.offload import relay_thread_enabled
    from proxy.tls.contract import HubEngine

    assert isinstance(engine_module("fastpath"), HubEngine)
    assert not isinstance(engine_module("python"), HubEngine)
    assert not relay_thread_enabled(engine_module("python"))
