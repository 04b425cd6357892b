"""ALPN and the peer leaf for the HTTP layer, on both engines and across them (parity)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from support import pki

Harness = Pki = Any
ENGINES = ["python", "fastpath"]


def load(name: str) -> ModuleType:
    if name == "fastpath":
        from proxy import _fastpath

        return _fastpath
    from proxy.tls import engine_py

    return engine_py


def _handshake(harness: Harness, server_engine: ModuleType, client_engine: ModuleType, test_pki: Pki,
               server_leaf: pki.Leaf, client_leaf: pki.Leaf, server_alpn: tuple[str, ...] | None,
               client_alpn: tuple[str, ...] | None) -> tuple[Any, Any]:
    s_sock, c_sock = harness.pair()
    server = server_engine.ServerContext(test_pki.material(server_leaf)).new_connection(s_sock.fileno())
    client = client_engine.ClientContext(test_pki.material(client_leaf)).new_connection(c_sock.fileno())
    if server_alpn is not None:
        server_engine.offer_alpn(server, server_alpn)
    if client_alpn is not None:
        client_engine.offer_alpn(client, client_alpn)
    assert harness.handshake(server, s_sock, client, c_sock) == {}
    return server, client


@pytest.mark.parametrize("server_name", ENGINES)
@pytest.mark.parametrize("client_name", ENGINES)
@pytest.mark.parametrize(("server_alpn", "client_alpn", "expected"), [
    (("h2", "http/1.1"), ("h2", "http/1.1"), "h2"),
    (("h2", "http/1.1"), ("http/1.1",), "http/1.1"),
    (("http/1.1",), ("h2", "http/1.1"), "http/1.1"),
    (None, ("h2", "http/1.1"), ""),     # a TCP listener negotiates nothing: the client falls back
    (("h2", "http/1.1"), None, ""),     # a client that offers nothing: the server sniffs
])
def test_alpn_is_negotiated_alike_on_both_engines(harness: Harness, test_pki: Pki, server_leaf: pki.Leaf,
                                                  client_leaf: pki.Leaf, server_name: str, client_name: str,
                                                  server_alpn: tuple[str, ...] | None,
                                                  client_alpn: tuple[str, ...] | None, expected: str) -> None:
    se, ce = load(server_name), load(client_name)
    server, client = _handshake(harness, se, ce, test_pki, server_leaf, client_leaf, server_alpn, client_alpn)
    assert (se.selected_alpn(server), ce.selected_alpn(client)) == (expected, expected)


def test_peer_leaf_der_is_the_peers_leaf_on_both_sides(harness: Harness, engine: ModuleType, test_pki: Pki,
                                                       server_leaf: pki.Leaf, client_leaf: pki.Leaf) -> None:
    server, client = _handshake(harness, engine, engine, test_pki, server_leaf, client_leaf, None, None)
    assert engine.peer_leaf_der(server) == client_leaf.chain_der[0]
    assert engine.peer_leaf_der(client) == server_leaf.chain_der[0]


def test_unsupported_alpn_list_is_refused(harness: Harness, engine: ModuleType, test_pki: Pki,
                                          server_leaf: pki.Leaf) -> None:
    s_sock, _ = harness.pair()
    server = engine.ServerContext(test_pki.material(server_leaf)).new_connection(s_sock.fileno())
    with pytest.raises(ValueError):
        engine.offer_alpn(server, ("spdy/3",))
