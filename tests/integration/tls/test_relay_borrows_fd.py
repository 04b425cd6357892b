"""The relay borrows the plain fd: the runtime owns it, so nothing the relay drops may close it.

The pyOpenSSL engine keeps one socket object on the plain fd for the
relay's life; a socket object closes its fd when collected unless it is
detached, and by then the number may name another connection. Both
engines run the same checks.
"""

from __future__ import annotations

import gc
import os
import socket
from typing import Any

import pytest


@pytest.fixture
def established(engine: Any, harness: Any, test_pki: Any, server_leaf: Any, client_leaf: Any) -> Any:
    return harness.connect(engine.ServerContext(test_pki.material(server_leaf)),
                           engine.ClientContext(test_pki.material(client_leaf)))


def _still_open(plain: socket.socket, app: socket.socket) -> None:
    os.fstat(plain.fileno())  # raises EBADF if the fd was closed behind our back
    app.send(b"ping")
    assert plain.recv(16) == b"ping"


@pytest.mark.parametrize("dropped_in_a_cycle", [False, True], ids=["refcount", "cycle"])
def test_dropping_a_relay_leaves_the_plain_socket_open(engine: Any, harness: Any, established: Any,
                                                       dropped_in_a_cycle: bool) -> None:
    plain, app = harness.pair()
    relay = engine.Relay(established.client, plain.fileno())
    assert relay.plain_to_tls() == engine.WANT_PLAIN_READ  # the relay has touched the fd
    if dropped_in_a_cycle:
        holder: list[Any] = [relay]
        holder.append(holder)  # only the cyclic collector can free it: finalisers then run in any order
        del holder
    del relay
    gc.collect()
    _still_open(plain, app)


def test_relay_never_waits_on_a_process_wide_default_timeout(engine: Any, harness: Any, established: Any) -> None:
    """socket.setdefaulttimeout() would turn an empty plain socket into a blocking recv; the relay must not wait."""
    plain, _app = harness.pair()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(1.0)
    try:
        relay = engine.Relay(established.client, plain.fileno())
        assert relay.plain_to_tls() == engine.WANT_PLAIN_READ
    finally:
        socket.setdefaulttimeout(previous)
