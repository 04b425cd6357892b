"""Post-handshake re-authentication in both engines, over real sockets (issue 11.2; parity).

The server asks again (request_reauth), the client answers from its
ClientIdentity's newest context while both relays keep pumping, and the
server reports the answer (reauth_answered) with the new peer facts, or
refuses a chain that does not verify, with the same VerifyFailure in both
engines.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any

import pytest
from OpenSSL import SSL
from support import pki

from proxy.errors import SidecarError, VerificationError, VerifyFailure


class Line:
    """An established pair with a Relay on each side and a plain socket pair behind each relay."""

    def __init__(self, engine: Any, harness: Any, server_ctx: Any, client_ctx: Any) -> None:
        self.engine = engine
        est = harness.connect(server_ctx, client_ctx)
        self.server, self.client = est.server, est.client
        self.server_app, server_plain = harness.pair()
        self.client_app, client_plain = harness.pair()
        self.relays = [engine.Relay(est.server, server_plain.fileno()), engine.Relay(est.client, client_plain.fileno())]

    def pump(self) -> None:
        for relay in self.relays:
            relay.tls_to_plain()
            relay.plain_to_tls()

    def reauthenticate(self, timeout: float = 5.0) -> bool:
        """Ask, then pump both relays until the server has the whole answer (or raise what the engine raised)."""
        step = self.server.request_reauth()
        if step == self.engine.CANNOT_REAUTH:
            return False
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump()
            if step != self.engine.DONE:
                step = self.server.request_reauth()
            if self.server.reauth_answered():
                return True
            time.sleep(0.005)
        raise TimeoutError("no answer to the certificate request")

    def echo_through(self, data: bytes) -> bytes:
        self.client_app.sendall(data)
        got = b""
        end = time.monotonic() + 5
        while len(got) < len(data) and time.monotonic() < end:
            self.pump()
            try:
                got += self.server_app.recv(65536)
            except BlockingIOError:
                time.sleep(0.005)
        return got


def _renewed(test_pki: Any, path: str = "/client", ca: pki.Ca | None = None) -> Any:
    leaf = pki.make_svid(ca or test_pki.root, path, lifetime=dt.timedelta(hours=2))
    return test_pki.material(leaf, generation=2), leaf


def test_the_server_sees_the_clients_newest_svid_on_the_same_connection(engine, harness, test_pki, server_leaf,
                                                                         client_leaf):
    identity = engine.ClientIdentity()
    first = engine.ClientContext(test_pki.material(client_leaf), identity)
    identity.publish(first)
    line = Line(engine, harness, engine.ServerContext(test_pki.material(server_leaf)), first)
    assert line.echo_through(b"before") == b"before"
    material, leaf = _renewed(test_pki)
    identity.publish(engine.ClientContext(material, identity))  # a rotation: the live SSL keeps its old context
    assert not line.server.reauth_pending
    assert line.reauthenticate()
    assert line.server.peer_spiffe_id == "spiffe://example.org/client"
    assert line.server.peer_not_after == pytest.approx(leaf.cert.not_valid_after_utc.timestamp())
    assert line.server.peer_not_after > client_leaf.cert.not_valid_after_utc.timestamp()
    assert not line.server.reauth_pending
    assert line.echo_through(b"after") == b"after"
    assert line.reauthenticate(), "a second request on the same connection works too"


def test_without_a_client_identity_the_client_answers_with_the_certificate_it_has(engine, harness, test_pki,
                                                                                  server_leaf, client_leaf):
    line = Line(engine, harness, engine.ServerContext(test_pki.material(server_leaf)),
                engine.ClientContext(test_pki.material(client_leaf)))
    assert line.reauthenticate()
    assert line.server.peer_not_after == pytest.approx(client_leaf.cert.not_valid_after_utc.timestamp())


def test_a_renewed_chain_that_does_not_verify_is_refused_with_the_same_reason_in_both_engines(
        engine, harness, test_pki, server_leaf, client_leaf):
    identity = engine.ClientIdentity()
    first = engine.ClientContext(test_pki.material(client_leaf), identity)
    identity.publish(first)
    line = Line(engine, harness, engine.ServerContext(test_pki.material(server_leaf)), first)
    material, _ = _renewed(test_pki, ca=test_pki.rogue)  # example.org's name, another key
    identity.publish(engine.ClientContext(material, identity))
    with pytest.raises((VerificationError, SidecarError, OSError)) as info:
        line.reauthenticate()
    # The compiled engine refuses inside the exchange (alert; the relay fails and the reason is kept),
    # the reference engine once the answer is complete: either way the reason is the verification's.
    refused = info.value if isinstance(info.value, VerificationError) else line.server.verify_failure
    assert isinstance(refused, VerificationError), info.value
    assert refused.reason is VerifyFailure.UNTRUSTED_CHAIN


@pytest.mark.parametrize("max_version", [SSL.TLS1_2_VERSION, None], ids=["tls12", "tls13-without-pha"])
def test_a_peer_that_cannot_be_asked_says_so_and_the_connection_goes_on(engine, harness, test_pki, server_leaf,
                                                                        client_leaf, raw_peer, max_version):
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    s_sock, c_sock = harness.pair()
    server = server_ctx.new_connection(s_sock.fileno())
    client = raw_peer(c_sock, server=False, leaf=client_leaf, max_version=max_version)  # offers no PHA
    assert harness.handshake(server, s_sock, client, c_sock) == {}
    assert server.request_reauth() == engine.CANNOT_REAUTH
    assert not server.reauth_pending
    client.conn.send(b"still here")
    plain_app, plain = harness.pair()
    relay = engine.Relay(server, plain.fileno())
    end = time.monotonic() + 5
    got = b""
    while got != b"still here" and time.monotonic() < end:
        relay.tls_to_plain()
        try:
            got += plain_app.recv(100)
        except BlockingIOError:
            time.sleep(0.005)
    assert got == b"still here"


def test_only_a_server_asks(engine, harness, test_pki, server_leaf, client_leaf):
    line = Line(engine, harness, engine.ServerContext(test_pki.material(server_leaf)),
                engine.ClientContext(test_pki.material(client_leaf)))
    with pytest.raises(SidecarError):
        line.client.request_reauth()


def test_the_app_closing_after_a_re_authentication_is_still_a_clean_end(engine, harness, test_pki, server_leaf,
                                                                       client_leaf):
    identity = engine.ClientIdentity()
    first = engine.ClientContext(test_pki.material(client_leaf), identity)
    identity.publish(first)
    line = Line(engine, harness, engine.ServerContext(test_pki.material(server_leaf)), first)
    assert line.reauthenticate()
    line.client_app.shutdown(socket.SHUT_WR)  # the app is done: the client relay sends close_notify
    end = time.monotonic() + 5
    statuses: list[int] = []
    while time.monotonic() < end:
        statuses = [relay.tls_to_plain() for relay in line.relays] + [relay.plain_to_tls() for relay in line.relays]
        if statuses[3] == engine.EOF and statuses[0] == engine.EOF:
            break
        time.sleep(0.005)
    assert statuses[3] == engine.EOF and statuses[0] == engine.EOF, statuses
