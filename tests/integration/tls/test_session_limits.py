"""Issue 11.1: what a peer can make the session cache hold.

A peer's certificate list is capped (MAX_CERT_LIST) in both engines with
the same reason, and a refused peer's session is never kept or resumed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.errors import HandshakeFailure, TlsError
from proxy.tls.openssl_terms import MAX_CERT_LIST


def _junk(size: int) -> bytes:
    """A self-signed certificate carrying ``size`` bytes of padding."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "junk")])
    now = dt.datetime.now(dt.timezone.utc)
    pad = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), bytes(size))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(pad, critical=False).sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def test_a_padded_peer_chain_is_refused_with_the_same_reason(engine, harness, test_pki, server_leaf, client_leaf):
    junk = _junk(1024)
    padded = test_pki.material(client_leaf)
    padded = dataclasses.replace(padded, chain_der=(*padded.chain_der, *[junk] * (MAX_CERT_LIST // len(junk) + 2)))
    server_ctx = engine.ServerContext(test_pki.material(server_leaf))
    s_sock, c_sock = harness.pair()
    server = server_ctx.new_connection(s_sock.fileno())
    client = engine.ClientContext(padded).new_connection(c_sock.fileno())
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert isinstance(errors.get("server"), TlsError), errors
    assert errors["server"].reason is HandshakeFailure.PROTOCOL
    assert "excessive message size" in errors["server"].detail


def test_a_chain_under_the_limit_is_accepted(engine, harness, test_pki, server_leaf, client_leaf):
    junk = _junk(1024)
    padded = test_pki.material(client_leaf)
    padded = dataclasses.replace(padded, chain_der=(*padded.chain_der, junk, junk))  # a few KB: fine
    est = harness.connect(engine.ServerContext(test_pki.material(server_leaf)), engine.ClientContext(padded))
    assert est.server.peer_spiffe_id == "spiffe://example.org/client"


@pytest.mark.parametrize("engine", ["fastpath"], indirect=True)  # server sessions: the compiled engine's only
def test_a_forgotten_server_session_leaves_the_cache_and_is_never_resumed(harness, test_pki, server_leaf,
                                                                          client_leaf):
    fastpath = pytest.importorskip("proxy._fastpath")
    server_ctx = fastpath.ServerContext(test_pki.material(server_leaf))
    client_ctx = fastpath.ClientContext(test_pki.material(client_leaf))
    est = harness.connect(server_ctx, client_ctx, "up")
    plain, _ = harness.pair()
    assert fastpath.Relay(est.client, plain.fileno()).tls_to_plain() == fastpath.WANT_TLS_READ  # ticket read
    assert server_ctx.cached_sessions == 1
    est.server.forget_session()  # what the runner does when policy refuses the peer
    assert server_ctx.cached_sessions == 0
    assert est.client.shutdown() == fastpath.DONE and est.server.shutdown() == fastpath.DONE
    est.client.close()
    est.server.close()
    again = harness.connect(server_ctx, client_ctx, "up")
    assert again.client.session_offered and not again.server.resumed


def test_a_forgotten_client_session_is_not_cached(engine, harness, test_pki, server_leaf, client_leaf):
    server_engine = engine
    if engine.NAME == "python":
        server_engine = pytest.importorskip("proxy._fastpath")  # a server that issues tickets
    server_ctx = server_engine.ServerContext(test_pki.material(server_leaf))
    client_ctx = engine.ClientContext(test_pki.material(client_leaf))
    est = harness.connect(server_ctx, client_ctx, "up")
    est.client.forget_session()  # expect refused the upstream
    plain, _ = harness.pair()
    assert engine.Relay(est.client, plain.fileno()).tls_to_plain() == engine.WANT_TLS_READ  # the ticket arrives
    assert est.client.shutdown() == engine.DONE
    est.client.close()
    assert client_ctx.cached_sessions("up") == 0


@pytest.mark.parametrize("engine", ["fastpath"], indirect=True)  # server sessions: the compiled engine's only
def test_a_listener_without_resumption_resumes_nothing(harness, test_pki, server_leaf, client_leaf):
    fastpath = pytest.importorskip("proxy._fastpath")
    server_ctx = fastpath.ServerContext(test_pki.material(server_leaf))
    client_ctx = fastpath.ClientContext(test_pki.material(client_leaf))
    for _ in range(3):
        s_sock, c_sock = harness.pair()
        server = server_ctx.new_connection(s_sock.fileno(), resumable=False)
        client = client_ctx.new_connection(c_sock.fileno(), "up")
        assert not harness.handshake(server, s_sock, client, c_sock)
        assert not server.resumed
        assert server_ctx.cached_sessions == 0


@pytest.mark.parametrize("engine", ["fastpath"], indirect=True)  # server sessions: the compiled engine's only
def test_the_server_cache_is_bounded_by_bytes_as_well_as_count(harness, test_pki, server_leaf, client_leaf):
    fastpath = pytest.importorskip("proxy._fastpath")
    budget = 12 * 1024  # a few sessions' worth
    server_ctx = fastpath.ServerContext(test_pki.material(server_leaf), session_cache_bytes=budget)
    client_ctx = fastpath.ClientContext(test_pki.material(client_leaf))
    counts = []
    for _ in range(8):
        est = harness.connect(server_ctx, client_ctx, "up")
        plain, _ = harness.pair()
        assert fastpath.Relay(est.client, plain.fileno()).tls_to_plain() == fastpath.WANT_TLS_READ
        assert est.client.shutdown() == fastpath.DONE and est.server.shutdown() == fastpath.DONE
        est.client.close()
        est.server.close()
        counts.append(server_ctx.cached_sessions)
        assert 0 < server_ctx.cached_session_bytes <= budget
    assert 1 <= max(counts) <= 3, counts  # the budget (a session here weighs ~3.5 KB), not the count (8192)
    default = fastpath.ServerContext(test_pki.material(server_leaf))
    assert default.cached_session_bytes == 0
