"""Context swap: one new context pair per snapshot; in-flight connections keep theirs.

Runs on the pyOpenSSL reference engine with real handshakes over a
socketpair, so "keeps theirs" means the old certificate is what the peer
actually received.
"""

from __future__ import annotations

import select
import socket
import time
from types import SimpleNamespace

import pytest

from proxy.identity.store import IdentityStore
from proxy.identity.swap import ContextSwap
from proxy.tls import engine_py
from proxy.tls.engine import DONE

NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py


def handshake(server_conn, client_conn, a: socket.socket, b: socket.socket) -> None:
    """Step both ends until both are DONE (each waits on its own fd's readiness)."""
    pending = {"s": (server_conn, a), "c": (client_conn, b)}
    for _ in range(200):
        for key, (conn, _) in list(pending.items()):
            if conn.handshake() == DONE:
                del pending[key]
        if not pending:
            return
        select.select([s for _, s in pending.values()], [], [], 0.05)
    raise AssertionError("handshake did not complete")


@pytest.fixture
def pair_sockets():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_new_snapshot_builds_a_new_pair_once(make_snapshot) -> None:
    store = IdentityStore()
    swap = ContextSwap(engine_py, store)
    assert swap.current is None
    store.publish(make_snapshot("/a"), NOW)
    first = swap.current
    store.publish(make_snapshot("/b"), NOW)
    second = swap.current
    assert first is not None and second is not None and first is not second
    assert (first.generation, second.generation) == (1, 2)
    assert first.material.spiffe_id == "spiffe://example.org/a"  # the old pair is untouched
    assert second.server.generation == 2 and second.client.generation == 2


def test_in_flight_connection_keeps_the_old_context(make_snapshot, pair_sockets) -> None:
    store = IdentityStore()
    swap = ContextSwap(engine_py, store)
    store.publish(make_snapshot("/server-old"), NOW)
    old = swap.current
    in_flight = old.server.new_connection(pair_sockets[0].fileno())
    store.publish(make_snapshot("/client-new"), NOW)
    client = swap.current.client.new_connection(pair_sockets[1].fileno())
    handshake(in_flight, client, *pair_sockets)
    assert client.peer_spiffe_id == "spiffe://example.org/server-old"
    assert in_flight.peer_spiffe_id == "spiffe://example.org/client-new"
    in_flight.close()
    client.close()


def test_removed_federated_bundle_is_absent_from_the_next_pair(make_snapshot) -> None:
    store = IdentityStore()
    swap = ContextSwap(engine_py, store)
    store.publish(make_snapshot(federated=True), NOW)
    before = swap.current
    store.publish(make_snapshot(federated=False), NOW)
    assert "partner.test" in before.material.bundles
    assert "partner.test" not in swap.current.material.bundles


def test_withdrawal_clears_current_and_expiry_fails_closed(make_snapshot) -> None:
    store = IdentityStore()
    snap = store.publish(make_snapshot(), NOW)
    swap = ContextSwap(engine_py, store)  # built from what the store already holds
    assert swap.current is not None and swap.current_at(snap.not_after - 1) is swap.current
    assert swap.current_at(snap.not_after) is None
    store.withdraw("redacted")
    assert swap.current is None


def test_unbuildable_snapshot_keeps_the_previous_pair(make_snapshot) -> None:
    calls = {"n": 0}

    def server_context(material):
        calls["n"] += 1
        if calls["n"] > 1:
            raise ValueError("engine refused the key")
        return engine_py.ServerContext(material)

    engine = SimpleNamespace(ServerContext=server_context, ClientContext=engine_py.ClientContext,
                             ClientIdentity=engine_py.ClientIdentity)
    store = IdentityStore()
    swap = ContextSwap(engine, store)
    swap_events = []
    swap.on_swap(swap_events.append)
    store.publish(make_snapshot("/a"), NOW)
    good = swap.current
    store.publish(make_snapshot("/b"), NOW)
    assert swap.current is good and "engine refused the key" in (swap.last_error or "")
    assert swap_events == [good]
    swap.close()
    store.publish(make_snapshot("/c"), NOW)
    assert calls["n"] == 2  # no longer following the store


def test_every_new_client_context_is_published_as_the_identity_live_connections_answer_with(make_snapshot) -> None:
    store = IdentityStore()
    swap = ContextSwap(engine_py, store)
    assert swap.client_identity is not None and swap.client_identity.current is None
    store.publish(make_snapshot("/a"), NOW)
    first = swap.current
    store.publish(make_snapshot("/a"), NOW)
    second = swap.current
    assert first is not None and second is not None
    assert swap.client_identity.current is second.client  # what an old connection presents when asked again
    assert first.client is not second.client  # the old context itself is untouched
