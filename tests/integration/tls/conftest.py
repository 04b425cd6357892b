"""Engine-level harness: both TLS engines over real socketpairs, real certificates.

Every test here takes the ``engine`` fixture, so each behaviour is checked
on the compiled engine (``proxy._fastpath``) and on its pyOpenSSL twin
(``proxy.tls.engine_py``) with the same assertions. The engines work on
non-blocking fds and return what to wait for; the harness waits with
select() like a runtime would, so nothing here busy-loops or sleeps.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from support import pki
from support.combos import engine_module, engine_params

from proxy.tls.material import TlsMaterial

@pytest.fixture(params=engine_params())
def engine(request: pytest.FixtureRequest) -> ModuleType:
    """The engine under test (reference, then compiled: skipped, with the reason, when not built)."""
    return engine_module(request.param)


@dataclass
class Pki:
    """Trust domains for the tests: example.org (root + intermediate), other.org, a rogue example.org root."""

    root: pki.Ca
    intermediate: pki.Ca
    other: pki.Ca
    rogue: pki.Ca

    @property
    def bundles(self) -> dict[str, tuple[bytes, ...]]:
        return {"example.org": (self.root.der,), "other.org": (self.other.der,)}

    def material(self, leaf: pki.Leaf, *, bundles: dict[str, tuple[bytes, ...]] | None = None,
                 generation: int = 1) -> TlsMaterial:
        return pki.tls_material(leaf, self.bundles if bundles is None else bundles, generation=generation)


@pytest.fixture(scope="session")
def test_pki() -> Pki:
    root = pki.make_ca("example.org")
    return Pki(root=root, intermediate=pki.make_ca("example.org", parent=root),
               other=pki.make_ca("other.org"), rogue=pki.make_ca("example.org"))


@pytest.fixture(scope="session")
def server_leaf(test_pki: Pki) -> pki.Leaf:
    return pki.make_svid(test_pki.intermediate, "/server")


@pytest.fixture(scope="session")
def client_leaf(test_pki: Pki) -> pki.Leaf:
    return pki.make_svid(test_pki.root, "/client")


def wait(readable: list[Any], writable: list[Any], timeout: float = 0.05) -> None:
    """Block until a socket is ready (or a short timeout), as a runtime would."""
    select.select(readable, writable, [], timeout)


@dataclass
class Established:
    server: Any
    client: Any
    server_sock: socket.socket
    client_sock: socket.socket


@dataclass
class Harness:
    """Socket pairs (closed at teardown: engines never close fds) and handshake drivers."""

    engine: ModuleType
    made: list[socket.socket] = field(default_factory=list)

    def pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        for s in (a, b):
            s.setblocking(False)
        self.made += [a, b]
        return a, b

    def handshake(self, server: Any, server_sock: socket.socket, client: Any, client_sock: socket.socket,
                  deadline: float = 5.0) -> dict[str, BaseException]:
        """Drive both handshakes to the end; return the exception each side raised (if any).

        A side that fails has its socket shut down, as a runtime would close
        it, so the other side sees the end instead of waiting forever.
        """
        pending = {"server": (server, server_sock), "client": (client, client_sock)}
        errors: dict[str, BaseException] = {}
        end = time.monotonic() + deadline
        while pending:
            if time.monotonic() > end:
                raise TimeoutError(f"handshake stuck: {sorted(pending)}")
            readers, writers = [], []
            for name, (conn, sock) in list(pending.items()):
                try:
                    step = conn.handshake()
                except Exception as exc:  # the test inspects it
                    errors[name] = exc
                    del pending[name]
                    sock.shutdown(socket.SHUT_RDWR)
                    continue
                if step == self.engine.DONE:
                    del pending[name]
                elif step == self.engine.WANT_WRITE:
                    writers.append(sock)
                else:
                    readers.append(sock)
            if pending:
                wait(readers, writers)
        return errors

    def connect(self, server_ctx: Any, client_ctx: Any, session_key: str | None = None) -> Established:
        """A handshake that must succeed on both sides."""
        s_sock, c_sock = self.pair()
        server = server_ctx.new_connection(s_sock.fileno())
        client = client_ctx.new_connection(c_sock.fileno(), session_key)
        errors = self.handshake(server, s_sock, client, c_sock)
        assert not errors, errors
        return Established(server, client, s_sock, c_sock)


@pytest.fixture
def harness(engine: ModuleType) -> Iterator[Harness]:
    h = Harness(engine)
    yield h
    for sock in h.made:
        sock.close()


class RawPeer:
    """A plain pyOpenSSL endpoint with knobs the engines never expose (TLS version caps, no certificate).

    It stands for a foreign TLS implementation talking to our engines, and
    fits the harness: handshake() returns the engine's DONE/WANT_* values.
    """

    def __init__(self, sock: socket.socket, *, server: bool, leaf: pki.Leaf | None = None,
                 max_version: int | None = None) -> None:
        from OpenSSL import SSL

        self._SSL = SSL
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
        if max_version is not None:
            ctx.set_max_proto_version(max_version)
        if leaf is not None:
            ctx.use_certificate(leaf.cert)
            for extra in leaf.chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(leaf.key)  # type: ignore[arg-type]
        # Accept any certificate: this peer is the one being judged, not the judge.
        ctx.set_verify(SSL.VERIFY_PEER if server else SSL.VERIFY_NONE, lambda *a: True)
        self.conn = SSL.Connection(ctx, sock.fileno())
        if server:
            self.conn.set_accept_state()
        else:
            self.conn.set_connect_state()

    def handshake(self) -> int:
        try:
            self.conn.do_handshake()
        except self._SSL.WantReadError:
            return 1
        except self._SSL.WantWriteError:
            return 2
        return 0

    @property
    def version(self) -> str:
        return self.conn.get_protocol_version_name()


@pytest.fixture
def raw_peer() -> type[RawPeer]:
    return RawPeer
